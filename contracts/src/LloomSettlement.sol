// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title Lloom settlement: client escrow, batched receipt settlement, executor earnings.
/// @notice Clients deposit ETH; executors submit batches of receipts (the client-signed request
/// and the executor-signed response, EIP-712 under the domain "Lloom"/"1" of this contract);
/// each valid receipt moves its exact cost from the client's escrow to the executor's balance,
/// once. Invalid receipts are skipped with a `SettlementRejected` event naming the rule, so one
/// bad receipt never blocks a batch. Only hashes are on chain, never prompts or answers.
contract LloomSettlement is EIP712 {
    /// Mirrors `lloom_core::RequestCommitment` field for field (the order is part of the type hash).
    struct RequestCommitment {
        address client;
        address executor;
        string model;
        bytes32 requestHash;
        uint64 maxInputTokens;
        uint64 maxOutputTokens;
        uint256 pricePerInputToken;
        uint256 pricePerOutputToken;
        uint64 nonce;
        uint64 deadline;
    }

    /// One receipt. The executor's `ResponseCommitment` is rebuilt from the request and these
    /// fields (its `requestDigest`, `client`, `executor` and `model` come from the request and its
    /// `totalCost` is computed), so calldata carries only what the request does not determine and
    /// a response that claims another cost fails its signature check.
    struct Receipt {
        RequestCommitment request;
        bytes requestSignature;
        bytes32 contentHash;
        uint64 inputTokens;
        uint64 outputTokens;
        uint8 finishReason;
        uint64 timestamp;
        bytes responseSignature;
    }

    /// Why a receipt was not settled.
    enum Rejection {
        None,
        BadRequestSignature,
        BadResponseSignature,
        BadFinishReason,
        TooManyInputTokens,
        TooManyOutputTokens,
        CostOverflow,
        LateResponse,
        AlreadySettled,
        InsufficientEscrow
    }

    struct PendingWithdrawal {
        uint256 amount;
        uint64 unlockAt;
    }

    bytes32 public constant REQUEST_TYPEHASH = keccak256(
        "RequestCommitment(address client,address executor,string model,bytes32 requestHash,uint64 maxInputTokens,uint64 maxOutputTokens,uint256 pricePerInputToken,uint256 pricePerOutputToken,uint64 nonce,uint64 deadline)"
    );
    bytes32 public constant RESPONSE_TYPEHASH = keccak256(
        "ResponseCommitment(bytes32 requestDigest,address client,address executor,string model,bytes32 contentHash,uint64 inputTokens,uint64 outputTokens,uint256 totalCost,uint8 finishReason,uint64 timestamp)"
    );
    /// Highest finish reason (0 stop, 1 length, 2 cancelled, 3 error, 4 partial checkpoint).
    uint8 public constant MAX_FINISH_REASON = 4;
    /// How long after the request's deadline a response may be timestamped (clock skew).
    uint64 public constant RESPONSE_GRACE_SECS = 30;

    /// Seconds between a client's withdrawal request and its execution, so receipts for work
    /// already done stay payable.
    uint64 public immutable withdrawalDelay;

    /// Client escrow, in wei.
    mapping(address client => uint256) public escrowOf;
    /// Executor earnings not yet withdrawn, in wei.
    mapping(address executor => uint256) public earningsOf;
    /// Pending client withdrawals.
    mapping(address client => PendingWithdrawal) public pendingWithdrawalOf;
    /// Settled nonces, 256 per word, per (client, executor) pair.
    mapping(bytes32 pair => mapping(uint256 word => uint256 bits)) private settledBits;

    event Deposited(address indexed client, uint256 amount, uint256 escrow);
    event WithdrawalRequested(address indexed client, uint256 amount, uint64 unlockAt);
    event Withdrawn(address indexed client, uint256 amount);
    event Settled(
        bytes32 indexed requestDigest,
        address indexed client,
        address indexed executor,
        uint256 cost,
        uint64 inputTokens,
        uint64 outputTokens
    );
    event SettlementRejected(bytes32 indexed requestDigest, address indexed executor, Rejection reason);
    event EarningsWithdrawn(address indexed executor, uint256 amount);

    error NothingToWithdraw();
    error WithdrawalLocked(uint64 unlockAt);
    error TransferFailed();

    constructor(uint64 withdrawalDelay_) EIP712("Lloom", "1") {
        withdrawalDelay = withdrawalDelay_;
    }

    // ----- client escrow ---------------------------------------------------------------------

    /// Adds the sent ETH to the caller's escrow.
    function deposit() external payable {
        uint256 escrow = escrowOf[msg.sender] + msg.value;
        escrowOf[msg.sender] = escrow;
        emit Deposited(msg.sender, msg.value, escrow);
    }

    /// Starts the notice period for withdrawing `amount` (replacing any earlier request).
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert NothingToWithdraw();
        uint64 unlockAt = uint64(block.timestamp) + withdrawalDelay;
        pendingWithdrawalOf[msg.sender] = PendingWithdrawal(amount, unlockAt);
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    /// After the notice period, pays out the requested amount (or what escrow is left).
    function withdraw() external {
        PendingWithdrawal memory pending = pendingWithdrawalOf[msg.sender];
        if (pending.amount == 0) revert NothingToWithdraw();
        if (block.timestamp < pending.unlockAt) revert WithdrawalLocked(pending.unlockAt);
        uint256 amount = Math.min(pending.amount, escrowOf[msg.sender]);
        delete pendingWithdrawalOf[msg.sender];
        escrowOf[msg.sender] -= amount;
        emit Withdrawn(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    // ----- executors ---------------------------------------------------------------------------

    /// Settles a batch; returns how many receipts were settled and their total cost.
    function settle(Receipt[] calldata receipts) external returns (uint256 settled, uint256 total) {
        for (uint256 i = 0; i < receipts.length; ++i) {
            Receipt calldata r = receipts[i];
            (Rejection reason, bytes32 digest, uint256 cost) = _check(r);
            if (reason == Rejection.None) {
                _markSettled(r.request);
                escrowOf[r.request.client] -= cost;
                earningsOf[r.request.executor] += cost;
                settled += 1;
                total += cost;
                emit Settled(digest, r.request.client, r.request.executor, cost, r.inputTokens, r.outputTokens);
            } else {
                emit SettlementRejected(digest, r.request.executor, reason);
            }
        }
    }

    /// Pays the caller's earnings.
    function withdrawEarnings() external {
        uint256 amount = earningsOf[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        earningsOf[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, amount);
        _pay(msg.sender, amount);
    }

    // ----- views -----------------------------------------------------------------------------

    /// Whether the request `nonce` of `client` to `executor` has been settled.
    function isSettled(address client, address executor, uint64 nonce) public view returns (bool) {
        return settledBits[_pair(client, executor)][nonce >> 8] & (uint256(1) << (nonce & 0xff)) != 0;
    }

    /// The EIP-712 domain separator of this contract.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// EIP-712 struct hash of a request.
    function hashRequest(RequestCommitment calldata q) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                REQUEST_TYPEHASH,
                q.client,
                q.executor,
                keccak256(bytes(q.model)),
                q.requestHash,
                q.maxInputTokens,
                q.maxOutputTokens,
                q.pricePerInputToken,
                q.pricePerOutputToken,
                q.nonce,
                q.deadline
            )
        );
    }

    /// EIP-712 struct hash of the response a receipt stands for.
    function hashResponse(bytes32 reqDigest, Receipt calldata r, uint256 totalCost) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                RESPONSE_TYPEHASH,
                reqDigest,
                r.request.client,
                r.request.executor,
                keccak256(bytes(r.request.model)),
                r.contentHash,
                r.inputTokens,
                r.outputTokens,
                totalCost,
                r.finishReason,
                r.timestamp
            )
        );
    }

    /// The digest a client signs for `q` under this contract's domain.
    function requestDigest(RequestCommitment calldata q) public view returns (bytes32) {
        return _hashTypedDataV4(hashRequest(q));
    }

    /// Applies every rule to one receipt without changing state.
    function check(Receipt calldata r) external view returns (Rejection reason, bytes32 digest, uint256 cost) {
        return _check(r);
    }

    // ----- internals -------------------------------------------------------------------------

    function _check(Receipt calldata r) internal view returns (Rejection, bytes32 digest, uint256 cost) {
        RequestCommitment calldata q = r.request;
        digest = _hashTypedDataV4(hashRequest(q));
        if (!_signedBy(digest, r.requestSignature, q.client)) return (Rejection.BadRequestSignature, digest, 0);
        if (r.finishReason > MAX_FINISH_REASON) return (Rejection.BadFinishReason, digest, 0);
        if (r.inputTokens > q.maxInputTokens) return (Rejection.TooManyInputTokens, digest, 0);
        if (r.outputTokens > q.maxOutputTokens) return (Rejection.TooManyOutputTokens, digest, 0);
        (bool okIn, uint256 costIn) = Math.tryMul(r.inputTokens, q.pricePerInputToken);
        (bool okOut, uint256 costOut) = Math.tryMul(r.outputTokens, q.pricePerOutputToken);
        bool okSum;
        (okSum, cost) = Math.tryAdd(costIn, costOut);
        if (!(okIn && okOut && okSum)) return (Rejection.CostOverflow, digest, 0);
        bytes32 responseDigest = _hashTypedDataV4(hashResponse(digest, r, cost));
        if (!_signedBy(responseDigest, r.responseSignature, q.executor)) {
            return (Rejection.BadResponseSignature, digest, 0);
        }
        if (r.timestamp > uint256(q.deadline) + RESPONSE_GRACE_SECS) return (Rejection.LateResponse, digest, 0);
        if (isSettled(q.client, q.executor, q.nonce)) return (Rejection.AlreadySettled, digest, 0);
        if (escrowOf[q.client] < cost) return (Rejection.InsufficientEscrow, digest, 0);
        return (Rejection.None, digest, cost);
    }

    /// ECDSA (OpenZeppelin): 65-byte signatures only, malleable high-s forms rejected.
    function _signedBy(bytes32 digest, bytes calldata signature, address signer) internal pure returns (bool) {
        (address recovered, ECDSA.RecoverError failure,) = ECDSA.tryRecover(digest, signature);
        return failure == ECDSA.RecoverError.NoError && recovered == signer && signer != address(0);
    }

    function _markSettled(RequestCommitment calldata q) internal {
        settledBits[_pair(q.client, q.executor)][q.nonce >> 8] |= uint256(1) << (q.nonce & 0xff);
    }

    function _pair(address client, address executor) internal pure returns (bytes32) {
        return keccak256(abi.encode(client, executor));
    }

    function _pay(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
