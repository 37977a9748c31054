//! The network flags of the nodes that listen (executor and validator), and how they combine
//! with the configuration file's `[network]` section.

use clap::Args;

use super::NetworkSection;
use crate::network::{Multiaddr, NetworkConfig, RelayMode};

/// Network options of `lloom-executor start` and `lloom-validator start`, flattened into each.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkArgs {
    /// Address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/PORT and
    /// /ip4/0.0.0.0/udp/PORT/quic-v1, PORT 4001 for a validator and any free port for an
    /// executor].
    #[arg(long = "listen", env = "LLOOM_LISTEN", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// Validators to join, as multiaddrs ending in /p2p/PEER_ID (repeatable).
    #[arg(long = "bootstrap", env = "LLOOM_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// Disable mDNS discovery on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// When to reserve a relayed address on a validator, so that peers reach this node behind
    /// NAT: auto (once AutoNAT finds it unreachable), always, never [default: auto].
    #[arg(long, value_name = "MODE")]
    pub relay: Option<RelayMode>,
    /// Let AutoNAT probes use private addresses, when asking and when dialing back for others
    /// (labs and private networks; off on the internet).
    #[arg(long)]
    pub nat_probe_private_addrs: bool,
}

impl NetworkArgs {
    /// The network configuration: flags and environment, else `file`, else the TCP and QUIC
    /// addresses on all interfaces at `default_port` (0: any free port) and the defaults of
    /// [`NetworkConfig`].
    pub fn resolve(&self, file: &NetworkSection, default_port: u16) -> NetworkConfig {
        let listen = match self.listen.is_empty() {
            false => self.listen.clone(),
            true => file.listen.clone().unwrap_or_else(|| listen_on_all(default_port)),
        };
        let bootstrap = match self.bootstrap.is_empty() {
            false => self.bootstrap.clone(),
            true => file.bootstrap.clone().unwrap_or_default(),
        };
        NetworkConfig {
            listen_addrs: listen,
            bootstrap,
            enable_mdns: !self.no_mdns && file.mdns.unwrap_or(true),
            relay: self.relay.or(file.relay).unwrap_or_default(),
            nat_probe_private_addrs: self.nat_probe_private_addrs
                || file.nat_probe_private_addrs.unwrap_or(false),
            ..NetworkConfig::default()
        }
    }
}

/// TCP and QUIC on every IPv4 interface, at `port`.
fn listen_on_all(port: u16) -> Vec<Multiaddr> {
    [format!("/ip4/0.0.0.0/tcp/{port}"), format!("/ip4/0.0.0.0/udp/{port}/quic-v1")]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        network: NetworkArgs,
    }

    fn parse(flags: &[&str]) -> Result<NetworkArgs, clap::Error> {
        let argv = std::iter::once("node").chain(flags.iter().copied());
        Flags::try_parse_from(argv).map(|f| f.network)
    }

    #[test]
    fn defaults_listen_on_tcp_and_quic_at_the_port_given() {
        let config = parse(&[]).unwrap().resolve(&NetworkSection::default(), 4001);
        let listen: Vec<String> = config.listen_addrs.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]);
        assert!(config.bootstrap.is_empty());
        assert!(config.enable_mdns);
        assert_eq!(config.relay, RelayMode::default());
        assert!(!config.nat_probe_private_addrs);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = NetworkSection {
            listen: Some(vec!["/ip4/127.0.0.1/tcp/7000".parse().unwrap()]),
            bootstrap: Some(vec![]),
            mdns: Some(false),
            relay: Some(RelayMode::Never),
            nat_probe_private_addrs: Some(true),
        };
        let from_file = parse(&[]).unwrap().resolve(&file, 0);
        assert_eq!(from_file.listen_addrs, file.listen.clone().unwrap());
        assert!(!from_file.enable_mdns);
        assert_eq!(from_file.relay, RelayMode::Never);
        assert!(from_file.nat_probe_private_addrs);

        let flags = parse(&["--listen", "/ip4/127.0.0.1/tcp/9000", "--relay", "always"]).unwrap();
        let config = flags.resolve(&file, 0);
        assert_eq!(config.listen_addrs, vec!["/ip4/127.0.0.1/tcp/9000".parse().unwrap()]);
        assert_eq!(config.relay, RelayMode::Always);
        // `--no-mdns` can only turn mDNS off; the file's `false` stays.
        assert!(!config.enable_mdns);
        assert!(!parse(&["--no-mdns"]).unwrap().resolve(&NetworkSection::default(), 0).enable_mdns);
    }

    #[test]
    fn bad_addresses_and_relay_modes_are_refused() {
        let error = parse(&["--listen", "not-an-addr"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(parse(&["--bootstrap", "/ip4/1.2.3.4/tcp"]).is_err());
        let error = parse(&["--relay", "sometimes"]).unwrap_err();
        assert!(error.to_string().contains("sometimes"), "{error}");
    }
}
