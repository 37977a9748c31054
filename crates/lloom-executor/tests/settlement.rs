//! Settlement on a real EVM node (anvil): the contract is deployed, a client deposits, an
//! executor serves signed requests over the network, and its stored receipts are settled in
//! one transaction; nothing is settled twice, and an unreachable RPC loses nothing.
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
use lloom_core::chain::anvil::Anvil;
use lloom_core::network::NetworkConfig;
use lloom_core::{DomainConfig, ModelOffer, NodeKey, U256, VerifyPolicy};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::{ReceiptStore, ServedModel};
use lloom_executor::settle::settle_pending;
use lloom_executor::{AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

mod common;

const MODEL: &str = "scripted";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_settled_once_on_chain_and_survive_an_unreachable_rpc() {
    let anvil = tokio::task::spawn_blocking(Anvil::spawn).await.unwrap().unwrap();
    let (deployer, client_key, executor_key) =
        (anvil.key(0).unwrap(), anvil.key(1).unwrap(), anvil.key(2).unwrap());
    let contract = Settlement::deploy(anvil.url(), &deployer, 60).await.unwrap();
    let domain = DomainConfig { chain_id: 31337, verifying_contract: contract.address() };
    assert_eq!(contract.chain_id().await.unwrap(), 31337);
    let as_client = Settlement::at(anvil.url(), &client_key, contract.address()).unwrap();
    let deposit = U256::from(10u64).pow(U256::from(18));
    as_client.deposit(deposit).await.unwrap();
    assert_eq!(as_client.escrow_of(client_key.address()).await.unwrap(), deposit);

    // A network whose signatures are made for this contract's domain.
    let policy = VerifyPolicy::new(domain);
    let validator = Validator::spawn(
        &NodeKey::generate(),
        ValidatorConfig {
            network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
            policy,
            ..ValidatorConfig::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = validator.listen_addrs().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(dir.path().join("executor"));
    config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
    config.announce = AnnouncerConfig { domain, ..AnnouncerConfig::default() };
    let offer = ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(1_000_000_000u64),
        price_per_output_token: U256::from(2_000_000_000u64),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "Paris is the capital.")));
    let executor = ExecutorNode::start(&executor_key, vec![ServedModel { offer, backend }], config)
        .await
        .unwrap();
    let client = Client::connect(
        client_key.clone(),
        ClientConfig::default().bootstrap(bootstrap).policy(policy),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut expected = U256::ZERO;
    for _ in 0..3 {
        let receipt = client
            .chat(ChatRequest::user(MODEL, "Capital?"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        expected += receipt.cost;
    }
    let store = executor.server.receipts();
    assert_eq!(store.counts().unwrap(), (3, 3));

    // The RPC is unreachable: an error, and every receipt is still pending.
    let dead = Settlement::at("http://127.0.0.1:9", &executor_key, contract.address()).unwrap();
    assert!(settle_pending(store, &dead, 100).await.is_err());
    assert_eq!(store.counts().unwrap(), (3, 3));

    // One transaction settles all three; the executor earned exactly what the client paid.
    let as_executor = Settlement::at(anvil.url(), &executor_key, contract.address()).unwrap();
    let report = settle_pending(store, &as_executor, 100).await.unwrap();
    assert_eq!((report.transactions, report.settled, report.rejected), (1, 3, 0));
    assert_eq!(report.earned, expected);
    assert_eq!(store.counts().unwrap(), (3, 0));
    assert_eq!(as_executor.earnings_of(executor_key.address()).await.unwrap(), expected);
    assert_eq!(as_client.escrow_of(client_key.address()).await.unwrap(), deposit - expected);

    // Nothing left to settle.
    assert_eq!(settle_pending(store, &as_executor, 100).await.unwrap().transactions, 0);

    // A crash after confirmation but before the store was updated: the receipt is submitted
    // again, the contract refuses to pay twice, and the store catches up.
    let again = ReceiptStore::open(&dir.path().join("replayed.redb")).unwrap();
    for receipt in store.all(1000).unwrap() {
        again.put(&receipt).unwrap();
    }
    let report = settle_pending(&again, &as_executor, 100).await.unwrap();
    assert_eq!((report.settled, report.already_settled), (0, 3));
    assert_eq!(again.counts().unwrap(), (3, 0));
    assert_eq!(as_executor.earnings_of(executor_key.address()).await.unwrap(), expected);

    // Tampered and wrong-domain receipts are refused before sending, and refused by the
    // contract when sent anyway.
    let mut tampered = store.all(1).unwrap().remove(0);
    tampered.response.commitment.outputTokens += 1;
    tampered.response.commitment.totalCost += tampered.request.commitment.pricePerOutputToken;
    let mut foreign = tampered.clone();
    foreign.request = lloom_core::SignedRequest::sign(
        &client_key,
        DomainConfig::default(),
        foreign.request.commitment.clone(),
        foreign.request.body.clone(),
    )
    .unwrap();
    let base = store.all(1).unwrap().remove(0);
    let resign = |mut receipt: lloom_executor::serve::Receipt,
                  edit: &dyn Fn(&mut lloom_core::ResponseCommitment)| {
        edit(&mut receipt.response.commitment);
        receipt.response = lloom_core::SignedResponse::sign(
            &executor_key,
            domain,
            receipt.response.commitment.clone(),
        )
        .unwrap();
        receipt
    };
    let mut wrong_chain = base.clone();
    wrong_chain.request = lloom_core::SignedRequest::sign(
        &client_key,
        DomainConfig { chain_id: 1, ..domain },
        base.request.commitment.clone(),
        base.request.body.clone(),
    )
    .unwrap();
    let over_cost = resign(base.clone(), &|c| c.totalCost += U256::from(1));
    let late = resign(base.clone(), &|c| c.timestamp = base.request.commitment.deadline + 31);
    let max_out = base.request.commitment.maxOutputTokens;
    let price_out = base.request.commitment.pricePerOutputToken;
    let too_long = resign(base.clone(), &|c| {
        c.totalCost += U256::from(max_out + 1 - c.outputTokens) * price_out;
        c.outputTokens = max_out + 1;
    });
    // Contract reasons: 1 bad request signature, 2 bad response signature, 5 too many output
    // tokens, 7 late response.
    let cases =
        [(tampered, 2u8), (foreign, 1), (wrong_chain, 1), (over_cost, 2), (late, 7), (too_long, 5)];
    for (i, (receipt, contract_reason)) in cases.into_iter().enumerate() {
        let bad = ReceiptStore::open(&dir.path().join(format!("bad-{i}.redb"))).unwrap();
        bad.put(&receipt).unwrap();
        let report = settle_pending(&bad, &as_executor, 100).await.unwrap();
        assert_eq!((report.transactions, report.rejected), (0, 1), "refused locally, nothing sent");
        assert_eq!(
            bad.rejection(&receipt.digest()).unwrap(),
            Some(lloom_executor::settle::REJECTED_LOCALLY)
        );
        let sent = as_executor
            .settle(vec![lloom_core::chain::receipt_call_data(&receipt.request, &receipt.response)])
            .await
            .unwrap();
        assert!(sent.settled.is_empty());
        assert_eq!(sent.rejected.first().map(|r| r.1), Some(contract_reason), "{sent:?}");
    }
    assert_eq!(as_executor.earnings_of(executor_key.address()).await.unwrap(), expected);

    // A client without escrow does not sign: its worst-case cost exceeds its deposit (zero).
    let broke = anvil.key(3).unwrap();
    let guard = lloom_client::escrow::EscrowGuard::new(
        Settlement::at(anvil.url(), &broke, contract.address()).unwrap(),
        Duration::from_secs(30),
    );
    let broke_client = Client::connect(
        broke,
        ClientConfig::default()
            .bootstrap(validator.listen_addrs().await.unwrap())
            .policy(policy)
            .escrow_guard(guard),
    )
    .await
    .unwrap();
    let err = broke_client
        .chat(ChatRequest::user(MODEL, "Capital?"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(matches!(err, lloom_client::Error::InsufficientEscrow { .. }), "{err}");
    assert!(err.to_string().contains("exceeds your escrow (0 wei)"), "{err}");
    assert_eq!(store.counts().unwrap(), (3, 0), "nothing was served");

    // The executor withdraws its earnings.
    as_executor.withdraw_earnings().await.unwrap();
    assert_eq!(as_executor.earnings_of(executor_key.address()).await.unwrap(), U256::ZERO);
    client.shutdown();
    executor.shutdown().await.unwrap();
    validator.shutdown().await;
}

/// The real binary: `lloom-executor start --rpc-url ... --contract ...` signs for the
/// contract's domain and settles its receipts by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_executor_settles_by_itself() {
    use assert_cmd::cargo::CommandCargoExt;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;

    // The default model, fetched into the cache on first use.
    tokio::task::spawn_blocking(common::model_path).await.unwrap();
    let anvil = tokio::task::spawn_blocking(Anvil::spawn).await.unwrap().unwrap();
    let (client_key, executor_key) = (anvil.key(1).unwrap(), anvil.key(2).unwrap());
    let contract = Settlement::deploy(anvil.url(), &anvil.key(0).unwrap(), 60).await.unwrap();
    let as_client = Settlement::at(anvil.url(), &client_key, contract.address()).unwrap();
    as_client.deposit(U256::from(10u64).pow(U256::from(17))).await.unwrap();
    let domain = DomainConfig { chain_id: 31337, verifying_contract: contract.address() };
    let policy = VerifyPolicy::new(domain);
    let validator = Validator::spawn(
        &NodeKey::generate(),
        ValidatorConfig {
            network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
            policy,
            ..ValidatorConfig::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = validator.listen_addrs().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("executor.key");
    std::fs::write(&key, lloom_core::chain::anvil::DEV_KEYS[2]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = std::process::Command::cargo_bin("lloom-executor")
        .unwrap()
        .arg("--key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--contract", &contract.address().to_string()])
        .args(["start", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--n-ctx", "2048"])
        .args(["--rpc-url", anvil.url(), "--settle-interval-secs", "1"])
        .arg("--bootstrap")
        .arg(bootstrap[0].to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("settling receipts")) {
        let Some(Ok(line)) = lines.next() else { panic!("executor output ended: {seen:?}") };
        seen.push(line);
    }

    let client =
        Client::connect(client_key, ClientConfig::default().bootstrap(bootstrap).policy(policy))
            .await
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut request = ChatRequest::user("SmolLM2-135M-Instruct", "What is the capital of France?");
    request.max_tokens = 24;
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    assert!(receipt.text.contains("Paris"), "{:?}", receipt.text);

    // The executor's loop settles within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let earned = contract.earnings_of(executor_key.address()).await.unwrap();
        if earned == receipt.cost {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: earned {earned}, expected {}",
            receipt.cost
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    // On the way out, a last round: nothing is left for it, the loop paid the one receipt.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.starts_with("submitting the receipts not yet settled")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l == "no receipts were waiting to be settled"), "{rest:?}");
    assert!(child.wait().unwrap().success());
    validator.shutdown().await;
}
