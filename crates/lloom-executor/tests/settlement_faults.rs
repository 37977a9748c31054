//! Settlement under faults, on a real anvil: the chain goes away and comes back (same state),
//! the executor process is killed with receipts stored but not submitted, and a client short
//! of the executor's minimum escrow is refused. Every receipt ends settled exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::{ChatRequest, Client, ClientConfig};
use lloom_core::chain::Settlement;
use lloom_core::chain::anvil::{Anvil, DEV_KEYS};
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{DomainConfig, ModelOffer, NodeKey, U256, VerifyPolicy};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::{EscrowPolicy, ServedModel};
use lloom_executor::settle::{FinalRound, SettlerConfig, spawn_settler};
use lloom_executor::{AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};
use tokio_util::sync::CancellationToken;

mod common;

const MODEL: &str = "scripted";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn validator(policy: VerifyPolicy) -> (Validator, Vec<Multiaddr>) {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        policy,
        ..ValidatorConfig::default()
    };
    let v = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addrs = v.listen_addrs().await.unwrap();
    (v, addrs)
}

async fn executor(
    key: &NodeKey,
    bootstrap: &[Multiaddr],
    domain: DomainConfig,
    dir: &std::path::Path,
    escrow: Option<EscrowPolicy>,
) -> ExecutorNode {
    let mut config = ExecutorConfig::new(dir.to_owned());
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    config.announce = AnnouncerConfig { domain, ..AnnouncerConfig::default() };
    config.serve.escrow = escrow.map(Arc::new);
    let offer = ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(1000),
        price_per_output_token: U256::from(2000),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "Paris.")));
    ExecutorNode::start(key, vec![ServedModel { offer, backend }], config).await.unwrap()
}

async fn client(key: NodeKey, bootstrap: &[Multiaddr], policy: VerifyPolicy) -> Client {
    let config = ClientConfig { directory_ttl: Duration::ZERO, ..ClientConfig::default() }
        .bootstrap(bootstrap.to_vec())
        .policy(policy);
    let client = Client::connect(key, config).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
}

async fn wait_for_earnings(chain: &Settlement, executor: lloom_core::Address, expected: U256) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(earned) = chain.earnings_of(executor).await {
            assert!(earned <= expected, "paid more than the receipts: {earned} > {expected}");
            if earned == expected {
                return;
            }
        }
        assert!(Instant::now() < deadline, "earnings never reached {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_made_while_the_chain_is_down_are_settled_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (port, state) = (free_port(), dir.path().join("anvil-state.json"));
    let anvil = Anvil::spawn_with(port, Some(&state)).unwrap();
    let url = anvil.url().to_owned();
    let (client_key, executor_key) = (anvil.key(1).unwrap(), anvil.key(2).unwrap());
    let contract = Settlement::deploy(&url, &anvil.key(0).unwrap(), 60).await.unwrap();
    Settlement::at(&url, &client_key, contract.address())
        .unwrap()
        .deposit(U256::from(10u64.pow(17)))
        .await
        .unwrap();
    let domain = DomainConfig { chain_id: 31337, verifying_contract: contract.address() };
    let policy = VerifyPolicy::new(domain);
    let (_v, bootstrap) = validator(policy).await;
    let node =
        executor(&executor_key, &bootstrap, domain, &dir.path().join("executor"), None).await;
    let chain = Settlement::at(&url, &executor_key, contract.address()).unwrap();
    let stop = CancellationToken::new();
    let settler = SettlerConfig {
        interval: Duration::from_millis(200),
        max_backoff: Duration::from_millis(800),
        ..SettlerConfig::default()
    };
    spawn_settler(node.server.clone(), chain.clone(), settler, stop.clone());
    let client = client(client_key, &bootstrap, policy).await;

    let mut expected = U256::ZERO;
    expected += chat_costs(&client, 2).await;
    wait_for_earnings(&chain, executor_key.address(), expected).await;
    // The settler marks receipts only once it has seen the transaction confirmed, which can
    // come a moment after the earnings are visible on chain.
    wait_for_store(&node, (2, 0)).await;

    // The chain goes away; requests go on and their receipts wait in the store.
    anvil.stop().unwrap();
    expected += chat_costs(&client, 3).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the settler fails and backs off
    assert_eq!(node.server.receipts().counts().unwrap(), (5, 3));

    // It comes back with its state: the waiting receipts are settled, once.
    let _anvil = Anvil::spawn_with(port, Some(&state)).unwrap();
    wait_for_earnings(&chain, executor_key.address(), expected).await;
    wait_for_store(&node, (5, 0)).await;
    stop.cancel();
}

/// A fresh anvil with the contract deployed, the client's deposit in escrow (none when zero)
/// and a validator for the contract's domain.
struct ChainRig {
    anvil: Anvil,
    contract: Settlement,
    client_key: NodeKey,
    executor_key: NodeKey,
    domain: DomainConfig,
    policy: VerifyPolicy,
    bootstrap: Vec<Multiaddr>,
    _validator: Validator,
}

impl ChainRig {
    async fn start(deposit: U256) -> Self {
        let anvil = Anvil::spawn().unwrap();
        let (client_key, executor_key) = (anvil.key(1).unwrap(), anvil.key(2).unwrap());
        let contract = Settlement::deploy(anvil.url(), &anvil.key(0).unwrap(), 60).await.unwrap();
        if !deposit.is_zero() {
            let as_client = Settlement::at(anvil.url(), &client_key, contract.address()).unwrap();
            as_client.deposit(deposit).await.unwrap();
        }
        let domain = DomainConfig { chain_id: 31337, verifying_contract: contract.address() };
        let policy = VerifyPolicy::new(domain);
        let (_validator, bootstrap) = validator(policy).await;
        Self { anvil, contract, client_key, executor_key, domain, policy, bootstrap, _validator }
    }

    /// The contract as the executor sees it (it pays the gas).
    fn executor_chain(&self) -> Settlement {
        Settlement::at(self.anvil.url(), &self.executor_key, self.contract.address()).unwrap()
    }

    async fn executor(&self, dir: &std::path::Path, escrow: Option<EscrowPolicy>) -> ExecutorNode {
        executor(&self.executor_key, &self.bootstrap, self.domain, dir, escrow).await
    }

    async fn client(&self) -> Client {
        client(self.client_key.clone(), &self.bootstrap, self.policy).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_made_since_the_last_round_are_settled_when_the_settler_stops() {
    let dir = tempfile::tempdir().unwrap();
    let rig = ChainRig::start(U256::from(10u64.pow(17))).await;
    let node = rig.executor(dir.path(), None).await;
    let (chain, client) = (rig.executor_chain(), rig.client().await);

    // One receipt before the settler starts: its first round settles it, and the next round
    // is an hour away.
    let mut expected = chat_costs(&client, 1).await;
    let stop = CancellationToken::new();
    let settler = SettlerConfig { interval: Duration::from_secs(3600), ..SettlerConfig::default() };
    let task = spawn_settler(node.server.clone(), chain.clone(), settler, stop.clone());
    wait_for_store(&node, (1, 0)).await;

    // Two more; the settler is stopped long before its next round: its last round pays them.
    expected += chat_costs(&client, 2).await;
    assert_eq!(node.server.receipts().counts().unwrap(), (3, 2));
    stop.cancel();
    match task.await.unwrap() {
        FinalRound::Done(report) => {
            assert_eq!((report.settled, report.transactions, report.pending), (2, 1, 0));
        }
        other => panic!("expected the last round to settle: {other:?}"),
    }
    assert_eq!(node.server.receipts().counts().unwrap(), (3, 0));
    assert_eq!(chain.earnings_of(rig.executor_key.address()).await.unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_round_on_an_unreachable_chain_ends_in_time_and_keeps_the_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let rig = ChainRig::start(U256::ZERO).await;
    let node = rig.executor(dir.path(), None).await;
    chat_costs(&rig.client().await, 1).await;
    let chain = rig.executor_chain();
    rig.anvil.stop().unwrap();

    let stop = CancellationToken::new();
    stop.cancel();
    let settler = SettlerConfig { final_round: Duration::from_secs(5), ..SettlerConfig::default() };
    let task = spawn_settler(node.server.clone(), chain, settler, stop);
    let last = tokio::time::timeout(Duration::from_secs(60), task).await.unwrap().unwrap();
    assert!(matches!(last, FinalRound::Failed(_) | FinalRound::TimedOut), "{last:?}");
    assert_eq!(node.server.receipts().counts().unwrap(), (1, 1), "kept for the next start");
}

/// Asks `count` questions; the total cost of their verified receipts.
async fn chat_costs(client: &Client, count: usize) -> U256 {
    let mut total = U256::ZERO;
    for _ in 0..count {
        let answer = client.chat(ChatRequest::user(MODEL, "Capital?")).await.unwrap();
        total += answer.collect().await.unwrap().cost;
    }
    total
}

/// Waits (bounded) until the receipt store holds `(receipts, unsettled)`.
async fn wait_for_store(node: &ExecutorNode, counts: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.server.receipts().counts().unwrap() != counts {
        assert!(Instant::now() < deadline, "the store never reached {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_below_the_minimum_escrow_is_refused_with_a_signed_error() {
    let dir = tempfile::tempdir().unwrap();
    let rig = ChainRig::start(U256::from(1000)).await;
    let minimum =
        EscrowPolicy::new(rig.executor_chain(), U256::from(10u64.pow(15)), Duration::from_secs(30));
    let node = rig.executor(dir.path(), Some(minimum)).await;
    let client = rig.client().await;
    let err = client
        .chat(ChatRequest::user(MODEL, "Capital?"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("client escrow 1000 wei is below this executor's minimum"),
        "{err}"
    );
    assert_eq!(node.server.receipts().counts().unwrap(), (0, 0), "nothing served");
}

/// The executor process is killed (SIGKILL) after storing receipts and before submitting
/// them; `lloom-executor chain settle` run afterwards settles every one, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_a_killed_executor_are_settled_after_restart() {
    use assert_cmd::cargo::CommandCargoExt;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;

    // The default model, fetched into the cache on first use.
    tokio::task::spawn_blocking(common::model_path).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::spawn().unwrap();
    let (client_key, executor_key) = (anvil.key(1).unwrap(), anvil.key(2).unwrap());
    let contract = Settlement::deploy(anvil.url(), &anvil.key(0).unwrap(), 60).await.unwrap();
    Settlement::at(anvil.url(), &client_key, contract.address())
        .unwrap()
        .deposit(U256::from(10u64.pow(17)))
        .await
        .unwrap();
    let domain = DomainConfig { chain_id: 31337, verifying_contract: contract.address() };
    let policy = VerifyPolicy::new(domain);
    let (_v, bootstrap) = validator(policy).await;
    let key = dir.path().join("executor.key");
    std::fs::write(&key, DEV_KEYS[2]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let executor_cmd = || {
        let mut cmd = std::process::Command::cargo_bin("lloom-executor").unwrap();
        cmd.arg("--key").arg(&key).arg("--data-dir").arg(dir.path());
        cmd.args(["--chain-id", "31337", "--contract", &contract.address().to_string()]);
        cmd
    };
    // No --rpc-url: the executor signs for the contract's domain but does not settle.
    let mut child = executor_cmd()
        .args(["start", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--n-ctx", "2048"])
        .arg("--bootstrap")
        .arg(bootstrap[0].to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().starts_with("listening on") {}
    let client = client(client_key, &bootstrap, policy).await;
    let mut expected = U256::ZERO;
    for _ in 0..2 {
        let mut request =
            ChatRequest::user("SmolLM2-135M-Instruct", "What is the capital of France?");
        request.max_tokens = 16;
        expected += client.chat(request).await.unwrap().collect().await.unwrap().cost;
    }
    child.kill().unwrap(); // SIGKILL: no clean shutdown
    child.wait().unwrap();

    let output =
        executor_cmd().args(["chain", "settle", "--rpc-url", anvil.url()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("settled 2 receipts in 1 transactions"), "{text}");
    let chain = Settlement::at(anvil.url(), &executor_key, contract.address()).unwrap();
    assert_eq!(chain.earnings_of(executor_key.address()).await.unwrap(), expected);
    // Running it again settles nothing more.
    let again =
        executor_cmd().args(["chain", "settle", "--rpc-url", anvil.url()]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("settled 0 receipts in 0 transactions")
    );
    assert_eq!(chain.earnings_of(executor_key.address()).await.unwrap(), expected);
}
