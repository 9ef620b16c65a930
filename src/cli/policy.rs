//! `tlsinspect policy list|enable|disable|delete` and `tlsinspect reload`.
//!
//! Edits go to the configuration file (see `control` for why), then the
//! running appliance is asked to reload it over its control socket.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::PolicyCommand;
use crate::config::{self, thousands, Config};
use crate::control::edit;
use crate::control::socket::{request, Request};

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))
}

/// Asks the appliance of `cfg` to reload; prints what happened.
fn reload_running(cfg: &Config) -> anyhow::Result<ExitCode> {
    match request(&cfg.appliance.control, &Request::Reload) {
        Ok(resp) if resp.ok => {
            println!("running appliance: {}", resp.message);
            Ok(ExitCode::SUCCESS)
        }
        Ok(resp) => {
            eprintln!(
                "tlsinspect: running appliance refused the reload: {}",
                resp.message
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("{e}; the change applies when the appliance starts");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `tlsinspect policy ...`.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::List { config } => list(&config),
        PolicyCommand::Enable { id, config } => toggle(&config, &id, true),
        PolicyCommand::Disable { id, config } => toggle(&config, &id, false),
        PolicyCommand::Delete { id, config } => {
            // Validate first: never edit a file that does not load.
            load(&config)?;
            edit::delete_policy(&config, &id)?;
            println!("policy {id:?} deleted from {}", config.display());
            let cfg = load(&config).context("after the edit")?;
            reload_running(&cfg)
        }
    }
}

fn toggle(path: &Path, id: &str, enabled: bool) -> anyhow::Result<ExitCode> {
    load(path)?;
    let before = edit::set_enabled(path, id, enabled)?;
    let word = if enabled { "enabled" } else { "disabled" };
    if before == enabled {
        println!("policy {id:?} was already {word} in {}", path.display());
    } else {
        println!("policy {id:?} {word} in {}", path.display());
    }
    let cfg = load(path).context("after the edit")?;
    reload_running(&cfg)
}

fn list(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(path)?;
    let running = request(&cfg.appliance.control, &Request::Status).ok();
    println!(
        "{:<24} {:<9} {:>6} {:>7}  name",
        "policy", "state", "scopes", "quota"
    );
    for p in cfg.policies.iter() {
        println!(
            "{:<24} {:<9} {:>6} {:>7}  {}",
            &*p.id,
            if p.enabled { "enabled" } else { "disabled" },
            p.scopes.len(),
            thousands(p.quota()),
            p.name
        );
    }
    println!("total quota: {} of 20,000", thousands(cfg.quota()));
    match running {
        Some(resp) if resp.ok => println!("running appliance: {}", resp.message),
        _ => println!(
            "no appliance answers on {}",
            cfg.appliance.control.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `tlsinspect reload --config FILE`.
pub fn reload(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    match request(&cfg.appliance.control, &Request::Reload) {
        Ok(resp) if resp.ok => {
            println!("{}", resp.message);
            Ok(ExitCode::SUCCESS)
        }
        Ok(resp) => anyhow::bail!("the appliance refused the reload: {}", resp.message),
        Err(e) => Err(e.into()),
    }
}
