//! What a validator lists, as a client discovers it, for the tests of announcements.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use lloom_client::cli::{DiscoveryArgs, discover};
use lloom_client::directory::ModelRow;
use lloom_core::network::Multiaddr;
use lloom_core::network::test_utils::WAIT;

/// The models the validator at `addr` lists once `done` holds of them (asked every 100 ms;
/// fails after [`WAIT`]).
pub(crate) async fn models_until(
    addr: &Multiaddr,
    done: impl Fn(&[ModelRow]) -> bool,
) -> Vec<ModelRow> {
    let args = DiscoveryArgs {
        bootstrap: vec![addr.clone()],
        no_mdns: true,
        p2p_listen: vec![],
        timeout_secs: Some(10),
        max_age_secs: Some(60),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = discover(&args).await.unwrap().models();
        if done(&rows) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reached: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
