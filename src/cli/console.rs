//! `tlsinspect console passwd|info`.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{self, Config};
use crate::console::{auth, cert};
use crate::control::edit;

/// Shortest password accepted.
const MIN_PASSWORD: usize = 8;

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("new console admin password: ")?;
        let b = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(a == b, "the two passwords differ; nothing changed");
        Ok(a)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// Runs `tlsinspect console passwd --config FILE`: writes the argon2id
/// hash of a password read from the terminal (or stdin) into `[console]`.
pub fn passwd(path: &Path) -> anyhow::Result<ExitCode> {
    load(path)?;
    let mut doc = edit::load(path)?;
    let Some(console) = doc.get_mut("console").and_then(|i| i.as_table_mut()) else {
        anyhow::bail!(
            "{}: no [console] section; add one (see configs/tlsinspect.toml) to have a console",
            path.display()
        );
    };
    let password = read_password()?;
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD,
        "the password must have at least {MIN_PASSWORD} characters; nothing changed"
    );
    let hash = auth::hash_password(&password)?;
    match console
        .get_mut("admin_password_hash")
        .and_then(|i| i.as_value_mut())
    {
        Some(v) => {
            let decor = v.decor().clone();
            *v = hash.as_str().into();
            *v.decor_mut() = decor;
        }
        None => {
            console.insert("admin_password_hash", toml_edit::value(hash.as_str()));
        }
    }
    config::parse(&doc.to_string(), path).map_err(|e| anyhow::anyhow!("{e}"))?;
    edit::store(path, &doc)?;
    println!(
        "console admin password set in {} (argon2id); it applies at the next login",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `tlsinspect console info --config FILE`: where the console is and
/// how to trust and log in to it.
pub fn info(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let Some(console) = &cfg.console else {
        println!("{}: no [console] section: no console", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let host = match console.listen.ip() {
        ip if ip.is_unspecified() => "<this host's address>".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    println!("console:      https://{host}:{}/", console.listen.port());
    let (cert_path, _) = cert::paths(console, &cfg.appliance.state_dir);
    match cert::Identity::load(
        &cert_path,
        &cert::paths(console, &cfg.appliance.state_dir).1,
    ) {
        Ok(id) => {
            println!("certificate:  {}", cert_path.display());
            println!("SHA-256:      {}", id.fingerprint);
        }
        Err(_) if console.tls.is_none() => println!(
            "certificate:  made at the first start of `tlsinspect run` in {}",
            cert_path.display()
        ),
        Err(e) => println!("certificate:  {e:#}"),
    }
    match &console.admin_password_hash {
        Some(_) => println!("password:     set (console.admin_password_hash)"),
        None => {
            let p = auth::first_password_path(&cfg.appliance.state_dir);
            match std::fs::read_to_string(&p) {
                Ok(pw) => println!("password:     first password {} (from {}); change it with: tlsinspect console passwd --config {}", pw.trim(), p.display(), path.display()),
                Err(_) => println!("password:     a first password is made at the first start in {}", p.display()),
            }
        }
    }
    println!("audit log:    {}", console.audit_log.display());
    let dirs: Vec<String> = console
        .ca_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    println!("CA dirs:      {}", dirs.join(", "));
    Ok(ExitCode::SUCCESS)
}
