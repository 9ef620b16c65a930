//! `tlsinspect demo` and the hidden `lab-helper` peers it runs in the lab.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::demo::{probe, storm};

/// Runs `tlsinspect demo`.
pub fn run(keep: bool) -> anyhow::Result<ExitCode> {
    crate::demo::run(keep)?;
    Ok(ExitCode::SUCCESS)
}

/// Peers built into the binary, run inside lab namespaces (hidden).
#[derive(Debug, Subcommand)]
pub enum HelperCommand {
    /// Send ICMP echo requests and print a JSON summary.
    Ping {
        #[arg(long)]
        source: Ipv4Addr,
        #[arg(long)]
        to: Ipv4Addr,
        #[arg(long, default_value_t = 3)]
        count: u32,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Send a storm of hostile IPv4/TCP packets; print what was sent as JSON.
    Storm(StormArgs),
    /// Send a storm of hostile Ethernet frames out of `iface`; print what
    /// was sent as JSON.
    L2Storm {
        #[arg(long)]
        iface: String,
        #[command(flatten)]
        storm: StormArgs,
    },
    /// Echo UDP datagrams until killed.
    UdpEcho {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send one UDP datagram and wait for its echo; print a JSON summary.
    UdpSend {
        #[arg(long)]
        source: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value = "tlsinspect lab")]
        payload: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Serve HTTPS until killed.
    Origin {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
    },
    /// Fetch one HTTPS URL `count` times (`concurrency` at once, a full
    /// handshake each); print a JSON summary.
    FetchLoop {
        #[arg(long)]
        source: Ipv4Addr,
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        sni: String,
        #[arg(long, required = true)]
        ca: Vec<PathBuf>,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Fetch one HTTPS URL and print what was seen as JSON.
    Fetch {
        #[arg(long)]
        source: Ipv4Addr,
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        sni: String,
        #[arg(long, required = true)]
        ca: Vec<PathBuf>,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        header: Vec<String>,
        #[arg(long)]
        body: Option<String>,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

/// Who a storm comes from, where it goes, how long and which one.
#[derive(Debug, clap::Args)]
pub struct StormArgs {
    #[arg(long)]
    source: Ipv4Addr,
    #[arg(long)]
    to: Ipv4Addr,
    #[arg(long, default_value_t = 443)]
    port: u16,
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs one `lab-helper` command.
pub fn helper(cmd: HelperCommand) -> anyhow::Result<ExitCode> {
    let json = match cmd {
        HelperCommand::Ping {
            source,
            to,
            count,
            timeout_ms,
        } => serde_json::to_string(&probe::ping(
            source,
            to,
            count,
            Duration::from_millis(timeout_ms),
        )?)?,
        HelperCommand::Storm(s) => {
            serde_json::to_string(&storm::storm(s.source, s.to, s.port, s.count, s.seed)?)?
        }
        HelperCommand::L2Storm { iface, storm: s } => serde_json::to_string(&storm::l2_storm(
            &iface, s.source, s.to, s.port, s.count, s.seed,
        )?)?,
        HelperCommand::UdpEcho { listen } => {
            probe::udp_echo_server(listen)?;
            return Ok(ExitCode::SUCCESS);
        }
        HelperCommand::UdpSend {
            source,
            to,
            payload,
            timeout_ms,
        } => serde_json::to_string(&probe::udp_probe(
            source,
            to,
            payload.as_bytes(),
            Duration::from_millis(timeout_ms),
        )?)?,
        HelperCommand::Origin { cert, key, listen } => {
            probe::https_origin(&listen, &cert, &key)?;
            return Ok(ExitCode::SUCCESS);
        }
        HelperCommand::FetchLoop {
            source,
            connect,
            sni,
            ca,
            path,
            count,
            concurrency,
            timeout_ms,
        } => serde_json::to_string(&probe::https_fetch_loop(
            source,
            connect,
            &sni,
            &ca,
            &path,
            count,
            concurrency,
            Duration::from_millis(timeout_ms),
        )?)?,
        HelperCommand::Fetch {
            source,
            connect,
            sni,
            ca,
            path,
            method,
            header,
            body,
            timeout_ms,
        } => serde_json::to_string(&probe::https_fetch(
            source,
            connect,
            &sni,
            &ca,
            &probe::FetchRequest {
                method,
                path,
                headers: header,
                body,
            },
            Duration::from_millis(timeout_ms),
        )?)?,
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}
