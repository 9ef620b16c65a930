use super::*;

fn cfg(dir: &Path, max_file_bytes: u64, max_files: usize) -> config::Capture {
    config::Capture {
        dir: dir.to_owned(),
        policies: None,
        max_file_bytes,
        max_files,
        pcap_over_ip: None,
    }
}

fn meta(id: u64, policy: &str) -> FlowMeta {
    FlowMeta {
        flow_id: id,
        src: "192.0.2.10:40000".parse().unwrap(),
        dest: "203.0.113.10:443".parse().unwrap(),
        policy_id: policy.into(),
        scope_id: "sc-1".into(),
        sni: Some("www.example.com".into()),
        alpn: None,
        tunnel: None,
    }
}

/// An inspector that lets everything through.
struct Pass;
struct PassFlow;
impl Inspector for Pass {
    fn new_flow(&self, _: &FlowMeta) -> Box<dyn FlowInspector> {
        Box::new(PassFlow)
    }
}
impl FlowInspector for PassFlow {
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit) {
        match dir {
            Direction::ToServer => out.to_server.extend_from_slice(data),
            Direction::ToClient => out.to_client.extend_from_slice(data),
        }
    }
    fn on_eof(&mut self, _: Direction, _: &mut Emit) {}
    fn take_alerts(&mut self) -> Vec<Alert> {
        Vec::new()
    }
    fn finish(&mut self) -> InspectReport {
        InspectReport::default()
    }
}

fn run_flow(insp: &CapturingInspector, id: u64, request: &[u8], response: &[u8]) {
    let mut f = insp.new_flow(&meta(id, "pol-a"));
    let mut out = Emit::default();
    f.on_data(Direction::ToServer, request, &mut out);
    assert_eq!(out.to_server, request, "the inner inspector sees the bytes");
    f.on_data(Direction::ToClient, response, &mut out);
    f.on_eof(Direction::ToServer, &mut out);
    f.finish();
}

/// (flags, seq, ack, payload) of every TCP packet of the pcap files in `dir`.
fn read_back(dir: &Path) -> Vec<(u8, u32, u32, Vec<u8>, bool)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let mut r = pcap_file::pcap::PcapReader::new(File::open(f).unwrap()).unwrap();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            let sliced = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
            let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
                panic!("not TCP")
            };
            let to_server = tcp.destination_port() == 443;
            let flags = u8::from(tcp.syn()) << 1
                | u8::from(tcp.fin())
                | u8::from(tcp.ack()) << 4
                | u8::from(tcp.psh()) << 3;
            // The checksum etherparse wrote verifies.
            let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
                panic!("not IPv4")
            };
            let want = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), want);
            out.push((
                flags,
                tcp.sequence_number(),
                tcp.acknowledgment_number(),
                tcp.payload().to_vec(),
                to_server,
            ));
        }
    }
    out
}

#[test]
fn a_flow_becomes_a_whole_tcp_session_with_continuous_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let cap = Capture::start(&cfg(dir.path(), 1 << 20, 10)).unwrap();
    let insp = CapturingInspector::new(Arc::new(Pass), cap.clone());
    let request = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n".to_vec();
    let response: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    run_flow(&insp, 7, &request, &response);
    cap.shutdown();
    let pkts = read_back(dir.path());
    // SYN, SYN-ACK, ACK, request, 4 response segments, 2 FINs.
    assert_eq!(
        pkts.len(),
        3 + 1 + 4 + 2,
        "{:?}",
        pkts.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let (syn, synack, ack) = (&pkts[0], &pkts[1], &pkts[2]);
    assert_eq!((syn.0, synack.0, ack.0), (0x02, 0x12, 0x10));
    assert_eq!(synack.2, syn.1.wrapping_add(1));
    let mut next = [syn.1.wrapping_add(1), synack.1.wrapping_add(1)];
    let mut streams = [Vec::new(), Vec::new()];
    for p in &pkts[3..] {
        let i = usize::from(!p.4);
        assert_eq!(p.1, next[i], "continuous sequence numbers");
        assert_eq!(p.2, next[1 - i], "acknowledges the other stream");
        next[i] = next[i].wrapping_add(p.3.len() as u32 + u32::from(p.0 & 1));
        assert!(p.3.len() <= SEGMENT);
        streams[i].extend_from_slice(&p.3);
    }
    assert_eq!(streams[0], request);
    assert_eq!(streams[1], response);
    assert_eq!(
        pkts.iter().filter(|p| p.0 & 1 == 1).count(),
        2,
        "a FIN each way"
    );
    assert!(
        cap.report().contains("10 packets written"),
        "{}",
        cap.report()
    );
}

#[test]
fn files_rotate_by_size_and_only_the_newest_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cap = Capture::start(&cfg(dir.path(), 20_000, 2)).unwrap();
    let insp = CapturingInspector::new(Arc::new(Pass), cap.clone());
    for id in 0..40 {
        run_flow(&insp, id, b"GET / HTTP/1.1\r\n\r\n", &[7u8; 3000]);
    }
    cap.shutdown();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        let len = f.unwrap().metadata().unwrap().len();
        assert!(len <= 20_000, "{len}");
    }
}

#[test]
fn only_the_selected_policies_are_captured() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1 << 20, 10);
    c.policies = Some(vec!["pol-b".into()]);
    let cap = Capture::start(&c).unwrap();
    let insp = CapturingInspector::new(Arc::new(Pass), cap.clone());
    run_flow(
        &insp,
        1,
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    cap.shutdown();
    assert!(read_back(dir.path()).is_empty());
}

#[test]
fn a_pcap_over_ip_client_gets_the_header_and_the_packets() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1 << 20, 10);
    c.pcap_over_ip = Some("127.0.0.1:0".parse().unwrap());
    let cap = Capture::start(&c).unwrap();
    let addr = cap.listen_addr().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    // The capture thread accepts within its 100 ms poll.
    std::thread::sleep(Duration::from_millis(300));
    let insp = CapturingInspector::new(Arc::new(Pass), cap.clone());
    run_flow(
        &insp,
        3,
        b"GET /live HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    cap.shutdown();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(&got[..]).unwrap();
    let mut n = 0;
    let mut seen = false;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        seen |= p.data.windows(9).any(|w| w == b"GET /live");
        n += 1;
    }
    assert_eq!(n, 7, "handshake, request, response, two FINs");
    assert!(seen);
}
