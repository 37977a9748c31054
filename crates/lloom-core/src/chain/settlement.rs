//! A typed client of a deployed (or to-be-deployed) settlement contract.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;

use super::bindings::LloomSettlement;
use crate::error::{Error, Result};
use crate::identity::NodeKey;
use crate::wire::{SignedRequest, SignedResponse};

/// The contract's view of one receipt: the signed request plus the executor's response fields.
pub fn receipt_call_data(
    request: &SignedRequest,
    response: &SignedResponse,
) -> LloomSettlement::Receipt {
    let q = &request.commitment;
    let r = &response.commitment;
    LloomSettlement::Receipt {
        request: LloomSettlement::RequestCommitment {
            client: q.client,
            executor: q.executor,
            model: q.model.clone(),
            requestHash: q.requestHash,
            maxInputTokens: q.maxInputTokens,
            maxOutputTokens: q.maxOutputTokens,
            pricePerInputToken: q.pricePerInputToken,
            pricePerOutputToken: q.pricePerOutputToken,
            nonce: q.nonce,
            deadline: q.deadline,
        },
        requestSignature: request.signature.as_bytes().to_vec().into(),
        contentHash: r.contentHash,
        inputTokens: r.inputTokens,
        outputTokens: r.outputTokens,
        finishReason: r.finishReason,
        timestamp: r.timestamp,
        responseSignature: response.signature.as_bytes().to_vec().into(),
    }
}

/// What one `settle` transaction did, from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Request digests settled.
    pub settled: Vec<B256>,
    /// Request digests rejected, with the contract's reason code.
    pub rejected: Vec<(B256, u8)>,
    /// Total cost moved, in wei.
    pub total: U256,
    /// The transaction hash.
    pub transaction: B256,
}

/// The settlement contract at an address, reached through an RPC URL, signing with a node key.
#[derive(Clone, Debug)]
pub struct Settlement {
    provider: DynProvider,
    address: Address,
    sender: Address,
}

fn rpc(e: impl std::fmt::Display) -> Error {
    Error::Chain(e.to_string())
}

fn provider(rpc_url: &str, key: &NodeKey) -> Result<DynProvider> {
    let url = rpc_url.parse().map_err(|e| Error::Chain(format!("bad RPC URL {rpc_url}: {e}")))?;
    let signer = PrivateKeySigner::from_bytes(&B256::from(*key.secret_bytes())).map_err(rpc)?;
    Ok(ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect_http(url).erased())
}

impl Settlement {
    /// Deploys a new contract with `withdrawal_delay_secs`; returns a client of it.
    pub async fn deploy(rpc_url: &str, key: &NodeKey, withdrawal_delay_secs: u64) -> Result<Self> {
        let provider = provider(rpc_url, key)?;
        let contract =
            LloomSettlement::deploy(provider.clone(), withdrawal_delay_secs).await.map_err(rpc)?;
        Ok(Self { address: *contract.address(), provider, sender: key.address() })
    }

    /// A client of the contract at `address`.
    pub fn at(rpc_url: &str, key: &NodeKey, address: Address) -> Result<Self> {
        Ok(Self { provider: provider(rpc_url, key)?, address, sender: key.address() })
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain id the RPC endpoint reports.
    pub async fn chain_id(&self) -> Result<u64> {
        self.provider.get_chain_id().await.map_err(rpc)
    }

    fn contract(&self) -> LloomSettlement::LloomSettlementInstance<DynProvider> {
        LloomSettlement::new(self.address, self.provider.clone())
    }

    async fn confirm(
        &self,
        call: alloy::contract::CallBuilder<
            &DynProvider,
            std::marker::PhantomData<impl alloy::sol_types::SolCall>,
        >,
    ) -> Result<TransactionReceipt> {
        let pending = call.send().await.map_err(rpc)?;
        let receipt = pending.get_receipt().await.map_err(rpc)?;
        if !receipt.status() {
            return Err(Error::Chain(format!("transaction {} reverted", receipt.transaction_hash)));
        }
        Ok(receipt)
    }

    /// Deposits `amount` wei into the sender's escrow.
    pub async fn deposit(&self, amount: U256) -> Result<B256> {
        let contract = self.contract();
        Ok(self.confirm(contract.deposit().value(amount)).await?.transaction_hash)
    }

    /// Escrow of `client`, in wei.
    pub async fn escrow_of(&self, client: Address) -> Result<U256> {
        self.contract().escrowOf(client).call().await.map_err(rpc)
    }

    /// Unwithdrawn earnings of `executor`, in wei.
    pub async fn earnings_of(&self, executor: Address) -> Result<U256> {
        self.contract().earningsOf(executor).call().await.map_err(rpc)
    }

    /// Starts the notice period for withdrawing `amount` of the sender's escrow.
    pub async fn request_withdrawal(&self, amount: U256) -> Result<B256> {
        let contract = self.contract();
        Ok(self.confirm(contract.requestWithdrawal(amount)).await?.transaction_hash)
    }

    /// Withdraws the requested escrow after the notice period.
    pub async fn withdraw(&self) -> Result<B256> {
        let contract = self.contract();
        Ok(self.confirm(contract.withdraw()).await?.transaction_hash)
    }

    /// Withdraws the sender's earnings.
    pub async fn withdraw_earnings(&self) -> Result<B256> {
        let contract = self.contract();
        Ok(self.confirm(contract.withdrawEarnings()).await?.transaction_hash)
    }

    /// Submits a batch and waits for its confirmation; returns what was settled and rejected.
    pub async fn settle(&self, receipts: Vec<LloomSettlement::Receipt>) -> Result<BatchOutcome> {
        let contract = self.contract();
        let receipt = self.confirm(contract.settle(receipts)).await?;
        let mut outcome =
            BatchOutcome { transaction: receipt.transaction_hash, ..BatchOutcome::default() };
        for log in receipt.inner.logs() {
            if let Ok(event) = LloomSettlement::Settled::decode_log(&log.inner) {
                outcome.settled.push(event.requestDigest);
                outcome.total += event.cost;
            } else if let Ok(event) = LloomSettlement::SettlementRejected::decode_log(&log.inner) {
                outcome.rejected.push((event.requestDigest, event.reason));
            }
        }
        Ok(outcome)
    }

    /// The sender's address.
    pub fn sender(&self) -> Address {
        self.sender
    }
}
