//! Command-line interface (DESIGN.md §7a). Thin: each command parses its
//! arguments here and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod ca;
pub mod console;
pub mod demo;
pub mod logs;
pub mod policy;
pub mod run;
pub mod validate;

/// Inline TLS inspection appliance.
#[derive(Debug, Parser)]
#[command(name = "tlsinspect", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance until SIGINT/SIGTERM.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration and print its policies, scopes, quota and CA status.
    Validate {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Self-contained lab showing inspection at work (needs root).
    Demo {
        /// Keep the lab (namespaces, processes, files) after the demo.
        #[arg(long)]
        keep: bool,
    },
    /// Certificate-authority tools.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Inspect or change policies of a running appliance.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Tell a running appliance to reload its configuration.
    Reload {
        /// Configuration file of the running appliance.
        #[arg(long)]
        config: PathBuf,
    },
    /// Query a traffic log.
    Logs(LogsArgs),
    /// The operator console: set its password, show where it is.
    Console {
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// Built-in lab peers run inside the demo's namespaces.
    #[command(hide = true, name = "lab-helper")]
    LabHelper {
        #[command(subcommand)]
        command: demo::HelperCommand,
    },
}

/// `tlsinspect ca ...`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a fresh CA unique to this install.
    Trial {
        /// Directory to write `ca.crt` and `ca.key` into.
        #[arg(long)]
        out: PathBuf,
        /// Key type of the CA.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key: crate::pki::KeyKind,
    },
    /// Print a certificate (PEM or DER).
    Show {
        /// Certificate file.
        file: PathBuf,
    },
    /// Write the chain of a policy's CA, one certificate per file plus the bundle.
    Export {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Policy id.
        #[arg(long)]
        policy: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `tlsinspect policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List policies and their state.
    List {
        #[arg(long)]
        config: PathBuf,
    },
    /// Enable a policy for new connections.
    Enable {
        id: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Disable a policy for new connections.
    Disable {
        id: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Delete a disabled policy.
    Delete {
        id: String,
        #[arg(long)]
        config: PathBuf,
    },
}

/// `tlsinspect console ...`
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Set the admin password (argon2id hash in [console]); reads it from the terminal or stdin.
    Passwd {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the console's address, certificate fingerprint and password state.
    Info {
        #[arg(long)]
        config: PathBuf,
    },
}

/// `tlsinspect logs ...`
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Traffic log (JSON lines).
    pub file: PathBuf,
    /// Only records of this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only records of this scope.
    #[arg(long)]
    pub scope: Option<String>,
    /// Only records with this action (inspected, pass, blocked).
    #[arg(long)]
    pub action: Option<String>,
    /// Only records whose SNI matches this glob.
    #[arg(long)]
    pub sni: Option<String>,
    /// Only records newer than this (e.g. 10m, 2h, 1d).
    #[arg(long)]
    pub since: Option<String>,
    /// Print the matching records as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tlsinspect: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Validate { config } => validate::run(&config),
        Command::Demo { keep } => demo::run(keep),
        Command::Ca { command } => match command {
            CaCommand::Trial { out, key } => ca::trial(&out, key),
            CaCommand::Show { file } => ca::show(&file),
            CaCommand::Export {
                config,
                policy,
                out,
            } => ca::export(&config, &policy, &out),
        },
        Command::Policy { command } => policy::run(command),
        Command::Reload { config } => policy::reload(&config),
        Command::Logs(args) => logs::run(&args),
        Command::Console { command } => match command {
            ConsoleCommand::Passwd { config } => console::passwd(&config),
            ConsoleCommand::Info { config } => console::info(&config),
        },
        Command::LabHelper { command } => demo::helper(command),
    }
}
