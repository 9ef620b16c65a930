//! The console in a real browser (Debian's chromium, driven over WebDriver
//! by chromedriver): log in, create a policy with the trial certificate
//! and two scopes in the seed's three steps, see the quota and the
//! over-limit error, change its decision settings, enable it, download its
//! certificate, disable and delete it. Screenshots of every page go to
//! `target/console-screenshots/flow/`.

mod console_kit;

use std::io::Read as _;

use console_kit::{have_browser, Browser, Kit, PASSWORD};

#[test]
fn operator_flow_in_chromium() -> anyhow::Result<()> {
    if !have_browser() {
        eprintln!("skipped: needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)");
        return Ok(());
    }
    let kit = Kit::start()?;
    let b = Browser::start("flow")?;
    let url = |p: &str| format!("{}{p}", kit.base);

    // Unauthenticated: the login page.
    b.goto(&url("/policies"))?;
    assert!(b.current_url()?.ends_with("/login"), "{}", b.current_url()?);
    b.screenshot("01-login")?;
    b.fill("#password", "not it")?;
    b.click_nav("form.login button[type=submit]")?;
    assert!(b.text("div.error")?.contains("Wrong password"));
    b.fill("#password", PASSWORD)?;
    b.click_nav("form.login button[type=submit]")?;
    assert!(
        b.current_url()?.ends_with("/policies"),
        "{}",
        b.current_url()?
    );
    assert!(b.text("#quota-total")?.contains("1 of 20,000"));
    b.screenshot("02-policies")?;

    // Step 1: name, description, "Apply for a trial certificate".
    b.click_nav("a.button.primary[href='/policies/new']")?;
    b.fill("#id", "pol-browser")?;
    b.fill("#name", "Browser-made policy")?;
    b.click("#ca option[value=trial]")?;
    b.fill("#description", "Made in chromium by the console test")?;
    b.screenshot("03-step1")?;
    b.click_nav("form.card button.primary")?;
    assert!(
        b.current_url()?.contains("/policies/pol-browser/scopes"),
        "{}",
        b.body_text()?
    );
    let trial = kit.state.join("ca/trial/ca.crt");
    assert!(trial.exists(), "the trial CA was not made");

    // Step 2: two scopes, with the quota per scope, policy and total.
    b.fill("#s1-id", "sc-web")?;
    b.fill("#s1-source_ips", "192.0.2.10\n192.0.2.11")?;
    b.fill("#s1-destinations", "203.0.113.0/24")?;
    b.click_nav("#scope-1 button[value=save]")?;
    assert_eq!(b.text("#scope-1 [data-scope-quota]")?, "2");
    assert!(b.text("#scope-1 .badge")?.contains("Saved"));
    b.click_nav("a.button[href*='add=1']")?;
    b.fill("#s2-id", "sc-api")?;
    b.fill("#s2-source_ips", "192.0.2.12")?;
    b.fill("#s2-destinations", "203.0.113.7")?;
    b.fill("#s2-destination_ports", "443/443, 8443/8443")?;
    b.click_nav("#scope-2 button[value=save]")?;
    assert_eq!(b.text("#scope-2 [data-scope-quota]")?, "2");
    assert_eq!(b.text("[data-policy-quota]")?, "4");
    assert_eq!(b.text("[data-total-quota]")?, "5 of 20,000");
    b.screenshot("04-scopes")?;

    // Over the limit: validate's error inline, the file unchanged.
    let before = std::fs::read_to_string(&kit.config)?;
    b.click_nav("a.button[href*='add=1']")?;
    let ips: Vec<String> = (1..=201).map(|i| format!("2001:db8::{i:x}")).collect();
    let ports: Vec<String> = (1..=100).map(|p| format!("{p}/{p}")).collect();
    b.fill("#s3-source_ips", &ips.join("\n"))?;
    b.fill("#s3-destination_ports", &ports.join(","))?;
    b.fill("#s3-destinations", "203.0.113.9")?;
    // The quota is recomputed while typing (console.js).
    assert_eq!(b.text("#scope-3 [data-scope-quota]")?, "20,100");
    b.click_nav("#scope-3 button[value=save]")?;
    let err = b.text("div.error")?;
    assert!(
        err.contains("quota of all policies together is 20,105")
            && err.contains("the limit is 20,000"),
        "{err}"
    );
    assert!(b.text("[data-total-quota]")?.contains("over the limit"));
    b.screenshot("05-over-limit")?;
    assert_eq!(std::fs::read_to_string(&kit.config)?, before);

    // The decision settings, each with why its default is what it is.
    b.goto(&url("/policies/pol-browser/settings"))?;
    assert!(b
        .body_text()?
        .contains("Every current browser, curl and openssl offer TLS 1.3"));
    b.click("input[name=tls13][value=inspect]")?;
    b.click("input[name=ech][value=inspect]")?;
    b.click_nav("form.card button.primary")?;
    assert!(b.text("div.notice")?.contains("Saved"));
    b.screenshot("06-settings")?;

    // Step 3: review with the policy id.
    b.goto(&url("/policies/pol-browser/review"))?;
    assert_eq!(b.text("#policy-id")?, "pol-browser");
    assert!(b.body_text()?.contains("sc-api"));
    b.screenshot("07-review")?;

    // The file is the source of truth: all of it is there, comments kept.
    let cfg = tlsinspect::config::load(&kit.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = cfg.policy("pol-browser").expect("policy in the file");
    assert!(!p.enabled);
    assert_eq!(p.scopes.len(), 2);
    assert_eq!(p.tls13, tlsinspect::config::PassOrInspect::Inspect);
    assert!(std::fs::read_to_string(&kit.config)?.contains("# operator's header comment"));

    // Enable with the switch; delete is not offered while enabled.
    b.goto(&url("/policies"))?;
    let sw = "#policy-pol-browser button.switch";
    assert_eq!(b.attr(sw, "aria-checked")?.as_deref(), Some("false"));
    b.click_nav(sw)?;
    assert!(b.text("div.notice")?.contains("Policy enabled"));
    assert_eq!(b.attr(sw, "aria-checked")?.as_deref(), Some("true"));
    assert!(
        kit.app.config().policy("pol-browser").unwrap().enabled,
        "running config"
    );
    assert_eq!(b.count("#policy-pol-browser a.danger")?, 0);
    b.screenshot("08-enabled")?;

    // Download the certificate.
    b.click("#policy-pol-browser a[download]")?;
    let zip_path = b.wait_download(".zip")?;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path)?)?;
    let mut crt = String::new();
    zip.by_name("pol-browser/00-issuing-ca.crt")?
        .read_to_string(&mut crt)?;
    assert_eq!(crt.trim(), std::fs::read_to_string(&trial)?.trim());
    assert!(zip.by_name("pol-browser/bundle.pem").is_ok());

    // Log audit and dashboard render (records are checked in the lab test).
    b.goto(&url("/logs?policy=pol-browser&since=1h"))?;
    assert!(b.body_text()?.contains("0 matching record(s)"));
    b.screenshot("09-logs")?;
    b.goto(&url("/dashboard"))?;
    assert!(b.body_text()?.contains("Bypass cache"));
    assert!(b.body_text()?.contains("days left"));
    b.screenshot("10-dashboard")?;

    // Disable, then delete with its confirmation.
    b.goto(&url("/policies"))?;
    b.click_nav(sw)?;
    assert!(b.text("div.notice")?.contains("Policy disabled"));
    b.click_nav("#policy-pol-browser a.danger")?;
    assert!(b.body_text()?.contains("Delete policy pol-browser?"));
    b.screenshot("11-delete-confirm")?;
    b.click_nav("button.danger")?;
    assert!(b.text("div.notice")?.contains("Policy deleted"));
    assert_eq!(b.count("#policy-pol-browser")?, 0);
    let cfg = tlsinspect::config::load(&kit.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(cfg.policy("pol-browser").is_none());

    // Every change is in the audit log with where it came from.
    let actions: Vec<String> = kit
        .audit_entries()
        .iter()
        .filter(|e| e["from"] == "127.0.0.1")
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    for a in [
        "login",
        "ca.trial",
        "policy.create",
        "policy.update",
        "policy.enable",
        "policy.disable",
        "policy.delete",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    Ok(())
}
