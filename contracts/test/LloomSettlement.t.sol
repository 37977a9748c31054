// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {LloomSettlement} from "../src/LloomSettlement.sol";
import {Cheats, Vm, console} from "./utils/Cheats.sol";

contract LloomSettlementTest is Cheats {
    LloomSettlement internal settlement;
    uint256 internal constant CLIENT_PK = 0xA11CE;
    uint256 internal constant EXECUTOR_PK = 0xE0E0;
    uint256 internal constant STRANGER_PK = 0xBAD;
    uint64 internal constant DELAY = 1 days;
    address internal client;
    address internal executor;
    /// secp256k1 group order (for building the malleable twin of a signature).
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function setUp() public {
        vm.warp(1_800_000_000);
        settlement = new LloomSettlement(DELAY);
        client = vm.addr(CLIENT_PK);
        executor = vm.addr(EXECUTOR_PK);
        vm.deal(client, 100 ether);
        vm.prank(client);
        settlement.deposit{value: 1 ether}();
    }

    // ----- helpers -----------------------------------------------------------------------------

    function _request(uint64 nonce) internal view returns (LloomSettlement.RequestCommitment memory q) {
        q = LloomSettlement.RequestCommitment({
            client: client,
            executor: executor,
            model: "SmolLM2-135M-Instruct",
            requestHash: keccak256(abi.encode("body", nonce)),
            maxInputTokens: 512,
            maxOutputTokens: 64,
            pricePerInputToken: 1000,
            pricePerOutputToken: 2000,
            nonce: nonce,
            deadline: uint64(block.timestamp + 60)
        });
    }

    function _sign(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _typed(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", settlement.domainSeparator(), structHash));
    }

    /// A receipt signed by the client and the executor, for `cost` as the executor claims it.
    function _receiptClaiming(LloomSettlement.RequestCommitment memory q, uint64 input, uint64 output, uint256 cost)
        internal
        view
        returns (LloomSettlement.Receipt memory r)
    {
        bytes32 digest = settlement.requestDigest(q);
        r.request = q;
        r.requestSignature = _sign(CLIENT_PK, digest);
        r.contentHash = keccak256("The capital of France is Paris.");
        r.inputTokens = input;
        r.outputTokens = output;
        r.finishReason = 0;
        r.timestamp = uint64(block.timestamp);
        r.responseSignature = _sign(EXECUTOR_PK, _typed(settlement.hashResponse(digest, r, cost)));
    }

    function _receipt(LloomSettlement.RequestCommitment memory q, uint64 input, uint64 output)
        internal
        view
        returns (LloomSettlement.Receipt memory)
    {
        uint256 cost = uint256(input) * q.pricePerInputToken + uint256(output) * q.pricePerOutputToken;
        return _receiptClaiming(q, input, output, cost);
    }

    function _resign(LloomSettlement.Receipt memory r) internal view {
        bytes32 digest = settlement.requestDigest(r.request);
        uint256 cost = uint256(r.inputTokens) * r.request.pricePerInputToken
            + uint256(r.outputTokens) * r.request.pricePerOutputToken;
        r.responseSignature = _sign(EXECUTOR_PK, _typed(settlement.hashResponse(digest, r, cost)));
    }

    function _one(LloomSettlement.Receipt memory r) internal pure returns (LloomSettlement.Receipt[] memory batch) {
        batch = new LloomSettlement.Receipt[](1);
        batch[0] = r;
    }

    function _reason(LloomSettlement.Receipt memory r) internal view returns (LloomSettlement.Rejection reason) {
        (reason,,) = settlement.check(r);
    }

    // ----- happy path --------------------------------------------------------------------------

    function test_settles_a_receipt_and_pays_the_executor() public {
        LloomSettlement.Receipt memory r = _receipt(_request(1), 16, 7);
        (uint256 settled, uint256 total) = settlement.settle(_one(r));
        assertEq(settled, 1, "settled");
        assertEq(total, 16 * 1000 + 7 * 2000, "total");
        assertEq(settlement.escrowOf(client), 1 ether - total, "escrow");
        assertEq(settlement.earningsOf(executor), total, "earnings");
        assertTrue(settlement.isSettled(client, executor, 1), "marked settled");

        uint256 before = executor.balance;
        vm.prank(executor);
        settlement.withdrawEarnings();
        assertEq(executor.balance - before, total, "paid out");
        assertEq(settlement.earningsOf(executor), 0, "earnings reset");
        vm.prank(executor);
        vm.expectRevert(LloomSettlement.NothingToWithdraw.selector);
        settlement.withdrawEarnings();
    }

    function test_a_checkpoint_of_a_cut_off_stream_is_settleable() public {
        LloomSettlement.Receipt memory r = _receipt(_request(2), 16, 32);
        r.finishReason = 4; // partial
        _resign(r);
        (uint256 settled,) = settlement.settle(_one(r));
        assertEq(settled, 1, "checkpoint settled");
    }

    // ----- every rule --------------------------------------------------------------------------

    function test_each_rule_rejects_without_moving_funds() public {
        LloomSettlement.RequestCommitment memory q = _request(3);
        LloomSettlement.Receipt memory r;

        r = _receipt(q, 16, 7);
        r.requestSignature = _sign(STRANGER_PK, settlement.requestDigest(q));
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadRequestSignature, "request signer");

        r = _receipt(q, 16, 7);
        r.responseSignature = _sign(STRANGER_PK, _typed(settlement.hashResponse(settlement.requestDigest(q), r, 30000)));
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadResponseSignature, "response signer");

        r = _receiptClaiming(q, 16, 7, 30001);
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadResponseSignature, "claimed cost != computed cost");

        r = _receipt(q, 16, 7);
        r.responseSignature = _sign(EXECUTOR_PK, _typed(settlement.hashResponse(keccak256("other"), r, 30000)));
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadResponseSignature, "response for another request");

        r = _receipt(q, 16, 7);
        r.contentHash = keccak256("something else");
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadResponseSignature, "tampered content hash");

        r = _receipt(q, 16, 65);
        assertTrue(_reason(r) == LloomSettlement.Rejection.TooManyOutputTokens, "max output tokens");

        r = _receipt(q, 513, 7);
        assertTrue(_reason(r) == LloomSettlement.Rejection.TooManyInputTokens, "max input tokens");

        r = _receipt(q, 16, 7);
        r.finishReason = 5;
        _resign(r);
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadFinishReason, "finish reason");

        r = _receipt(q, 16, 7);
        r.timestamp = q.deadline + 31;
        _resign(r);
        assertTrue(_reason(r) == LloomSettlement.Rejection.LateResponse, "after the deadline");

        LloomSettlement.RequestCommitment memory dear = _request(4);
        dear.pricePerInputToken = type(uint256).max / 2;
        r = _receiptClaiming(dear, 16, 7, 0);
        assertTrue(_reason(r) == LloomSettlement.Rejection.CostOverflow, "cost overflow");

        LloomSettlement.RequestCommitment memory big = _request(5);
        big.pricePerOutputToken = 1 ether;
        r = _receipt(big, 16, 7);
        assertTrue(_reason(r) == LloomSettlement.Rejection.InsufficientEscrow, "escrow");

        // The high-s twin of a valid signature is refused (OpenZeppelin ECDSA).
        r = _receipt(q, 16, 7);
        (uint8 v, bytes32 rr, bytes32 s) = vm.sign(CLIENT_PK, settlement.requestDigest(q));
        r.requestSignature = abi.encodePacked(rr, bytes32(N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadRequestSignature, "malleable signature");
        r.requestSignature = abi.encodePacked(rr, s); // 64 bytes
        assertTrue(_reason(r) == LloomSettlement.Rejection.BadRequestSignature, "short signature");

        // A rejected receipt in a batch leaves funds alone and does not block the others.
        LloomSettlement.Receipt[] memory batch = new LloomSettlement.Receipt[](2);
        batch[0] = _receipt(q, 16, 65);
        batch[1] = _receipt(_request(6), 16, 7);
        (uint256 settled, uint256 total) = settlement.settle(batch);
        assertEq(settled, 1, "one of two");
        assertEq(settlement.escrowOf(client), 1 ether - total, "only the valid one charged");
    }

    function test_a_request_is_settled_once() public {
        LloomSettlement.Receipt memory r = _receipt(_request(7), 16, 7);
        settlement.settle(_one(r));
        uint256 escrow = settlement.escrowOf(client);
        assertTrue(_reason(r) == LloomSettlement.Rejection.AlreadySettled, "second time");
        (uint256 settled,) = settlement.settle(_one(r));
        assertEq(settled, 0, "not again");
        assertEq(settlement.escrowOf(client), escrow, "charged once");
        // The same nonce to another executor is another request.
        assertTrue(!settlement.isSettled(client, vm.addr(STRANGER_PK), 7), "per executor");
    }

    // ----- withdrawals -------------------------------------------------------------------------

    function test_withdrawal_waits_for_the_notice_and_receipts_stay_payable() public {
        vm.prank(client);
        settlement.requestWithdrawal(1 ether);
        vm.prank(client);
        vm.expectRevert(abi.encodeWithSelector(LloomSettlement.WithdrawalLocked.selector, uint64(block.timestamp + DELAY)));
        settlement.withdraw();

        // During the notice an executor's receipt is still paid.
        (, uint256 cost) = settlement.settle(_one(_receipt(_request(8), 16, 7)));
        vm.warp(block.timestamp + DELAY);
        uint256 before = client.balance;
        vm.prank(client);
        settlement.withdraw();
        assertEq(client.balance - before, 1 ether - cost, "what was left");
        assertEq(settlement.escrowOf(client), 0, "escrow empty");
        vm.prank(client);
        vm.expectRevert(LloomSettlement.NothingToWithdraw.selector);
        settlement.withdraw();
    }

    // ----- fuzz --------------------------------------------------------------------------------

    function testFuzz_cost_is_exact_and_funds_are_conserved(uint64 input, uint64 output, uint64 pin, uint64 pout)
        public
    {
        input = uint64(input % 513);
        output = uint64(output % 65);
        LloomSettlement.RequestCommitment memory q = _request(9);
        q.pricePerInputToken = pin;
        q.pricePerOutputToken = pout;
        uint256 expected = uint256(input) * pin + uint256(output) * pout;
        vm.assume(expected <= 1 ether);
        uint256 escrowBefore = settlement.escrowOf(client);
        (uint256 settled, uint256 total) = settlement.settle(_one(_receipt(q, input, output)));
        assertEq(settled, 1, "settled");
        assertEq(total, expected, "cost");
        assertEq(escrowBefore - settlement.escrowOf(client), settlement.earningsOf(executor), "conserved");
    }

    function testFuzz_any_tampered_field_is_rejected(uint8 field, uint64 delta) public view {
        vm.assume(delta != 0);
        LloomSettlement.Receipt memory r = _receipt(_request(10), 16, 7);
        uint256 f = field % 9;
        if (f == 0) r.request.client = address(uint160(r.request.client) ^ uint160(delta));
        if (f == 1) r.request.executor = address(uint160(r.request.executor) ^ uint160(delta));
        if (f == 2) r.request.model = string.concat(r.request.model, "x");
        if (f == 3) r.request.requestHash = bytes32(uint256(r.request.requestHash) ^ delta);
        if (f == 4) r.request.nonce ^= delta;
        if (f == 5) r.request.deadline ^= delta;
        if (f == 6) r.contentHash = bytes32(uint256(r.contentHash) ^ delta);
        if (f == 7) r.timestamp ^= delta;
        if (f == 8) r.request.pricePerOutputToken ^= delta;
        assertTrue(_reason(r) != LloomSettlement.Rejection.None, "tampering detected");
    }

    // ----- gas ---------------------------------------------------------------------------------

    /// Execution gas and calldata gas (EIP-2028: 16 per non-zero byte, 4 per zero byte) per
    /// receipt for batches of 1, 10 and 100; run with `forge test -vv` to see them.
    function test_gas_per_receipt() public {
        uint256[3] memory sizes = [uint256(1), 10, 100];
        uint64 nonce = 1000;
        for (uint256 k = 0; k < 3; ++k) {
            LloomSettlement.Receipt[] memory batch = new LloomSettlement.Receipt[](sizes[k]);
            for (uint256 i = 0; i < sizes[k]; ++i) {
                batch[i] = _receipt(_request(nonce++), 16, 7);
            }
            bytes memory data = abi.encodeCall(LloomSettlement.settle, (batch));
            uint256 calldataGas;
            for (uint256 i = 0; i < data.length; ++i) {
                calldataGas += data[i] == 0 ? 4 : 16;
            }
            (uint256 settled,) = settlement.settle(batch);
            uint256 execution = vm.lastCallGas().gasTotalUsed; // the call alone, not our encoding
            assertEq(settled, sizes[k], "all settled");
            console.log("batch size", sizes[k]);
            console.log("  execution gas per receipt", execution / sizes[k]);
            console.log("  calldata gas per receipt", calldataGas / sizes[k]);
            console.log("  total per receipt incl. 21000 base", (execution + calldataGas + 21000) / sizes[k]);
        }
    }
}
