//! Network namespaces for fault tests (issue #29): each node on a host of
//! its own, so links between nodes can be cut while the store (a file all
//! namespaces share) and the test's clients still reach every node.
//!
//! The layout: a bridge in the test's own namespace holds `10.X.Y.1/24`;
//! host `i` is a namespace joined to it by a veth pair, at `10.X.Y.(11+i)`.
//! The test process reaches every host over the bridge. A cut is a
//! `blackhole` route inside a host's namespace: packets to the other host
//! vanish silently, as on a broken network (no reset, no error). No
//! traffic leaves these addresses, which exist only on this machine.
//! Everything is removed when the [`Net`] is dropped, however the test
//! ends.

use std::net::Ipv4Addr;
use std::process::Command;

/// One host: a network namespace and its address on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// Hosts on one bridge; removed on drop.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    /// The hosts, in order.
    pub hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Creates `n` hosts on a fresh bridge, or says why it cannot (not
    /// root, no `ip`, namespaces not allowed).
    pub fn create(n: usize) -> Result<Net, String> {
        // Names and a subnet of their own, so tests run in parallel.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = ((std::process::id() ^ nanos) % 25_000) as u16;
        let subnet = (10u8, 100 + (id % 100) as u8, (id / 100) as u8);
        let mut net = Net {
            bridge: format!("pbr{id}"),
            hosts: Vec::new(),
        };
        let gateway = format!("{}.{}.{}.1/24", subnet.0, subnet.1, subnet.2);
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &gateway, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..n {
            let ns = format!("pns{id}h{i}");
            let outside = format!("pv{id}h{i}");
            let inside = format!("pi{id}h{i}");
            let addr = Ipv4Addr::new(subnet.0, subnet.1, subnet.2, 11 + i as u8);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                ns: ns.clone(),
                addr,
            });
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &net.bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            let cidr = format!("{addr}/24");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Cuts the link from host `from` to host `to` only: `from`'s packets
    /// to `to` vanish (TCP needs both ways, so connections between them
    /// stall too, but `to` can still try).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let dst = format!("{}/32", self.hosts[to].addr);
        ip(&[
            "-n",
            &self.hosts[from].ns,
            "route",
            "add",
            "blackhole",
            &dst,
        ])
        .expect("adding a blackhole route");
    }

    /// Cuts the link between hosts `a` and `b` both ways.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Heals what [`Net::cut`] or [`Net::cut_one_way`] did between `a`
    /// and `b` (either way; a way that was not cut is left alone).
    pub fn heal(&self, a: usize, b: usize) {
        for (from, to) in [(a, b), (b, a)] {
            let dst = format!("{}/32", self.hosts[to].addr);
            let _ = ip(&[
                "-n",
                &self.hosts[from].ns,
                "route",
                "del",
                "blackhole",
                &dst,
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A namespace takes its end of the veth pair with it, and the
        // other end goes with its peer.
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
