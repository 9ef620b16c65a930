//! `tlsinspect demo` and the hidden `lab-helper` peers it runs in the lab.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::demo::{geneve, lb, probe, storm};

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
    /// Run the lab's gateway load balancer until SIGTERM or the stop file
    /// (DESIGN.md §13), writing its stats JSON at least every second.
    Lb(LbArgs),
    /// Stand in for an appliance: reflect GENEVE datagrams to their sender
    /// and answer `GET /health` (503 while the drain file exists).
    GeneveReflect {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        health: SocketAddr,
        #[arg(long)]
        drain_file: Option<PathBuf>,
    },
    /// Send malformed GENEVE packets to `to` and count any reply; print a
    /// JSON summary.
    GeneveMalformed {
        #[arg(long)]
        source: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 500)]
        wait_ms: u64,
    },
}

/// `lab-helper lb`: ports, neighbours, appliances, identity and files.
#[derive(Debug, clap::Args)]
pub struct LbArgs {
    /// The client-side port it taps.
    #[arg(long, default_value = "lbc")]
    client_iface: String,
    /// The server-side port it taps.
    #[arg(long, default_value = "lbs")]
    server_iface: String,
    /// Inner packets to this prefix leave by the client-side port.
    #[arg(long, default_value = "192.0.2.0/24")]
    client_prefix: ipnet::Ipv4Net,
    /// MAC address of the client-side neighbour.
    #[arg(long)]
    client_mac: String,
    /// MAC address of the server-side neighbour.
    #[arg(long)]
    server_mac: String,
    /// Its own GENEVE address.
    #[arg(long)]
    local: Ipv4Addr,
    /// An appliance's GENEVE address (repeat, in order).
    #[arg(long = "appliance", required = true)]
    appliances: Vec<Ipv4Addr>,
    /// TCP port of the appliances' `GET /health`.
    #[arg(long, default_value_t = 8081)]
    health_port: u16,
    /// The 24-bit VNI to send.
    #[arg(long, default_value_t = 4242)]
    vni: u32,
    /// AWS option type 1, the endpoint id.
    #[arg(long, default_value_t = 0x7470_6c61_625f_6531)]
    endpoint_id: u64,
    /// AWS option type 2, the attachment id.
    #[arg(long, default_value_t = 0x7470_6c61_625f_6132)]
    attachment_id: u64,
    /// How many UDP source ports (from 49152) the flow hash picks from.
    #[arg(long, default_value_t = 16)]
    src_ports: u16,
    /// Stats JSON, replaced whole.
    #[arg(long)]
    stats: PathBuf,
    /// Stop when this file appears.
    #[arg(long)]
    stop_file: Option<PathBuf>,
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
        HelperCommand::Lb(a) => {
            if a.vni > 0x00ff_ffff {
                anyhow::bail!("--vni {} does not fit 24 bits", a.vni);
            }
            lb::run(lb::LbConfig {
                client_iface: a.client_iface,
                server_iface: a.server_iface,
                client_prefix: a.client_prefix,
                client_mac: lb::parse_mac(&a.client_mac)?,
                server_mac: lb::parse_mac(&a.server_mac)?,
                local: a.local,
                appliances: a.appliances,
                health_port: a.health_port,
                identity: lb::Identity {
                    vni: a.vni,
                    endpoint_id: a.endpoint_id,
                    attachment_id: a.attachment_id,
                },
                src_ports: a.src_ports,
                stats: a.stats,
                stop_file: a.stop_file,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        HelperCommand::GeneveReflect {
            listen,
            health,
            drain_file,
        } => {
            geneve::reflect(listen, health, drain_file)?;
            return Ok(ExitCode::SUCCESS);
        }
        HelperCommand::GeneveMalformed {
            source,
            to,
            wait_ms,
        } => serde_json::to_string(&geneve::send_malformed(
            source,
            to,
            Duration::from_millis(wait_ms),
        )?)?,
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}
