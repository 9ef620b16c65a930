//! The console of a real `tlsinspect run` in the lab, in chromium: log in
//! with the first password, create a policy with the trial certificate,
//! enable it, download its certificate; a curl through the appliance that
//! trusts only that certificate is inspected by the policy, and its record
//! shows in the Log audit page; then the policy is disabled and deleted.
//!
//! The console listens on the appliance namespace's loopback; the test
//! reaches it through a socat forward on this namespace's loopback.

mod console_kit;
mod lab;

use std::io::Read as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use console_kit::{have_browser, Browser};
use lab::{LabMode, TestLab};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

#[test]
fn console_policy_inspects_curl_and_shows_its_record() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    if !have_browser() {
        eprintln!("skipped: needs /usr/bin/chromium and /usr/bin/chromedriver");
        return Ok(());
    }
    let t = TestLab::build("con", LabMode::AfPacket, &[CLIENT, OTHER], &[SERVER])?;
    t.start_nginx()?;
    let (config, log) = t.write_config(CLIENT)?;
    // The demo policy stays off: only the console's policy may inspect.
    let state = t.path("state");
    let text = std::fs::read_to_string(&config)?
        .replacen("enabled = true", "enabled = false", 1)
        .replacen(
            "[upstream]",
            &format!("state_dir = \"{}\"\n\n[upstream]", state.display()),
            1,
        )
        + "\n[console]\nlisten = \"127.0.0.1:9443\"\n";
    std::fs::write(&config, text)?;
    let app = t.start_appliance(&config, OTHER, SERVER)?;

    // Forward 127.0.0.1:<port> here to the console in the appliance ns.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut fwd = Command::new("socat");
    fwd.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!(
            "EXEC:ip netns exec {} socat STDIO TCP\\:127.0.0.1\\:9443",
            t.lab.appliance_ns()
        ));
    t.lab.spawn("console forward", fwd)?;
    let base = format!("https://127.0.0.1:{port}");
    let first = std::fs::read_to_string(state.join("console/first-password"))?;

    let b = Browser::start("lab")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match b.goto(&format!("{base}/login")) {
            Ok(()) if b.count("#password")? == 1 => break,
            _ if Instant::now() > deadline => {
                anyhow::bail!("the console did not answer: {}", app.stderr())
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    b.fill("#password", first.trim())?;
    b.click_nav("form.login button[type=submit]")?;
    assert!(
        b.current_url()?.ends_with("/policies"),
        "{}",
        b.body_text()?
    );

    // Three steps, then TLS 1.3 inspected (curl offers it), then enable.
    b.goto(&format!("{base}/policies/new"))?;
    b.fill("#id", "pol-lab")?;
    b.fill("#name", "Lab client")?;
    b.click("#ca option[value=trial]")?;
    b.click_nav("form.card button.primary")?;
    b.fill("#s1-id", "sc-lab")?;
    b.fill("#s1-source_ips", &CLIENT.to_string())?;
    b.fill("#s1-destinations", "203.0.113.0/24")?;
    b.click_nav("#scope-1 button[value=save]")?;
    assert_eq!(b.text("#scope-1 [data-scope-quota]")?, "1");
    b.goto(&format!("{base}/policies/pol-lab/settings"))?;
    b.click("input[name=tls13][value=inspect]")?;
    b.click_nav("form.card button.primary")?;
    b.goto(&format!("{base}/policies"))?;
    b.click_nav("#policy-pol-lab button.switch")?;
    assert!(b.text("div.notice")?.contains("Policy enabled"));
    b.screenshot("01-enabled")?;

    // The downloaded certificate is what the client trusts.
    b.click("#policy-pol-lab a[download]")?;
    let zip_path = b.wait_download(".zip")?;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path)?)?;
    let mut crt = String::new();
    zip.by_name("pol-lab/00-issuing-ca.crt")?
        .read_to_string(&mut crt)?;
    let trust = t.path("installed-ca.crt");
    std::fs::write(&trust, &crt)?;

    // curl through the appliance: it verifies against the policy's CA only,
    // so it succeeds only if the connection was inspected by the policy.
    let c = t.curl(CLIENT, SERVER, "/", &trust, &t.path("body.out"), false)?;
    assert_eq!(c.http_code, 200, "{c:?}");
    assert_eq!(c.ssl_verify_result, 0);
    assert!(c.issuer.contains("tlsinspect trial CA"), "{}", c.issuer);
    assert_eq!(
        std::fs::read_to_string(t.path("body.out"))?,
        "hello from nginx\n"
    );

    // Its record in the Log audit page.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.goto(&format!("{base}/logs?policy=pol-lab"))?;
        if b.count("tr.record")? > 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no record in the Log audit page; log: {:?}",
            lab::read_log(&log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let row = b.text("tr.record")?;
    assert!(row.contains("pol-lab") && row.contains("sc-lab"), "{row}");
    assert!(row.contains("inspected"), "{row}");
    assert!(row.contains("www.example.com"), "{row}");
    assert!(row.contains(&format!("{CLIENT}:{}", c.local_port)), "{row}");
    b.click("tr.record details summary")?;
    assert!(b
        .text("tr.record details pre")?
        .contains("\"policy_id\": \"pol-lab\""));
    b.screenshot("02-log-audit")?;
    b.goto(&format!("{base}/dashboard"))?;
    b.screenshot("03-dashboard")?;

    // Disable and delete; the file no longer has it.
    b.goto(&format!("{base}/policies"))?;
    b.click_nav("#policy-pol-lab button.switch")?;
    b.click_nav("#policy-pol-lab a.danger")?;
    b.click_nav("button.danger")?;
    assert!(b.text("div.notice")?.contains("Policy deleted"));
    let cfg = tlsinspect::config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(cfg.policy("pol-lab").is_none());
    drop(b);
    t.stop_appliance(&app)?;
    Ok(())
}
