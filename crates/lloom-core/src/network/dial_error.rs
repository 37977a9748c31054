//! A failed dial in one line: each address tried, with the innermost cause of its failure.

use std::error::Error as StdError;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::DialError;

/// `error` as one line, e.g. `/ip4/127.0.0.1/tcp/4001: Connection refused (os error 111)`
/// for each address (libp2p's own message nests the cause several levels deep, over lines).
pub(crate) fn describe(error: &DialError) -> String {
    match error {
        DialError::Transport(failures) if !failures.is_empty() => failures
            .iter()
            .map(|(addr, failure)| format!("{}: {}", without_peer(addr), innermost(failure)))
            .collect::<Vec<_>>()
            .join("; "),
        other => one_line(&other.to_string()),
    }
}

/// `addr` without its trailing `/p2p/<id>` (the peer is known from the context).
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

/// The last error of `error`'s source chain, on one line.
fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    one_line(&cause.to_string())
}

/// `text` with its lines joined by spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io;

    use libp2p::TransportError;

    use super::*;

    /// An error that wraps its cause under a heading, as libp2p's transports do.
    #[derive(Debug)]
    struct Nested(io::Error);

    impl std::fmt::Display for Nested {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Multiple dial errors occurred:\n - {}", self.0)
        }
    }

    impl StdError for Nested {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_address_is_named_with_the_root_cause_of_its_failure() {
        let peer = libp2p::PeerId::random();
        let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}").parse().unwrap();
        let quic: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let error = DialError::Transport(vec![
            (tcp, TransportError::Other(io::Error::other(Nested(refused)))),
            (quic.clone(), TransportError::MultiaddrNotSupported(quic)),
        ]);
        assert_eq!(
            describe(&error),
            "/ip4/127.0.0.1/tcp/4001: connection refused; /ip4/127.0.0.1/udp/4001/quic-v1: \
             Multiaddr is not supported: /ip4/127.0.0.1/udp/4001/quic-v1"
        );
    }

    #[test]
    fn other_failures_keep_libp2p_s_message_on_one_line() {
        assert_eq!(describe(&DialError::NoAddresses), DialError::NoAddresses.to_string());
        assert_eq!(
            describe(&DialError::Transport(vec![])),
            one_line(&DialError::Transport(vec![]).to_string())
        );
    }
}
