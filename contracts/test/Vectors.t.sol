// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {LloomSettlement} from "../src/LloomSettlement.sol";
import {Cheats} from "./utils/Cheats.sol";

/// The contract hashes exactly as lloom-core does: every request and response vector of
/// `test-vectors/eip712.json` (the file lloom-core's tests generate and check) gives the same
/// digest here, and its signature recovers to the vector's signer.
contract VectorsTest is Cheats {
    string internal json;
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    function setUp() public {
        json = vm.readFile("../test-vectors/eip712.json");
    }

    function _at(uint256 i, string memory field) internal pure returns (string memory) {
        return string.concat(".vectors[", _str(i), "].", field);
    }

    function _str(uint256 i) internal pure returns (string memory) {
        return vm.toString(i);
    }

    function _domainSeparator(uint256 i) internal view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("Lloom"),
                keccak256("1"),
                vm.parseJsonUint(json, _at(i, "typedData.domain.chainId")),
                vm.parseJsonAddress(json, _at(i, "typedData.domain.verifyingContract"))
            )
        );
    }

    function _request(uint256 i) internal view returns (LloomSettlement.RequestCommitment memory q) {
        string memory m = "typedData.message.";
        q.client = vm.parseJsonAddress(json, _at(i, string.concat(m, "client")));
        q.executor = vm.parseJsonAddress(json, _at(i, string.concat(m, "executor")));
        q.model = vm.parseJsonString(json, _at(i, string.concat(m, "model")));
        q.requestHash = vm.parseJsonBytes32(json, _at(i, string.concat(m, "requestHash")));
        q.maxInputTokens = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "maxInputTokens"))));
        q.maxOutputTokens = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "maxOutputTokens"))));
        q.pricePerInputToken = vm.parseJsonUint(json, _at(i, string.concat(m, "pricePerInputToken")));
        q.pricePerOutputToken = vm.parseJsonUint(json, _at(i, string.concat(m, "pricePerOutputToken")));
        q.nonce = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "nonce"))));
        q.deadline = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "deadline"))));
    }

    function _recover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
        return ecrecover(digest, v, r, s);
    }

    function _checkSignature(uint256 i, bytes32 digest) internal view {
        assertEq(digest, vm.parseJsonBytes32(json, _at(i, "digest")), "digest");
        bytes memory signature = vm.parseJsonBytes(json, _at(i, "signature"));
        assertEq(_recover(digest, signature), vm.parseJsonAddress(json, _at(i, "signer")), "signer");
    }

    function test_request_vectors_hash_and_recover_identically() public {
        LloomSettlement settlement = new LloomSettlement(1 days);
        for (uint256 i = 2; i <= 3; ++i) {
            bytes32 structHash = settlement.hashRequest(_request(i));
            bytes32 digest = keccak256(abi.encodePacked("\x19\x01", _domainSeparator(i), structHash));
            _checkSignature(i, digest);
        }
    }

    function test_response_vectors_hash_and_recover_identically() public {
        LloomSettlement settlement = new LloomSettlement(1 days);
        string memory m = "typedData.message.";
        for (uint256 i = 4; i <= 5; ++i) {
            LloomSettlement.Receipt memory r;
            r.request.client = vm.parseJsonAddress(json, _at(i, string.concat(m, "client")));
            r.request.executor = vm.parseJsonAddress(json, _at(i, string.concat(m, "executor")));
            r.request.model = vm.parseJsonString(json, _at(i, string.concat(m, "model")));
            r.contentHash = vm.parseJsonBytes32(json, _at(i, string.concat(m, "contentHash")));
            r.inputTokens = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "inputTokens"))));
            r.outputTokens = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "outputTokens"))));
            r.finishReason = uint8(vm.parseJsonUint(json, _at(i, string.concat(m, "finishReason"))));
            r.timestamp = uint64(vm.parseJsonUint(json, _at(i, string.concat(m, "timestamp"))));
            bytes32 requestDigest = vm.parseJsonBytes32(json, _at(i, string.concat(m, "requestDigest")));
            uint256 totalCost = vm.parseJsonUint(json, _at(i, string.concat(m, "totalCost")));
            bytes32 structHash = settlement.hashResponse(requestDigest, r, totalCost);
            _checkSignature(i, keccak256(abi.encodePacked("\x19\x01", _domainSeparator(i), structHash)));
        }
    }

    /// Deployed at the vector's contract address on its chain, the contract's own domain and
    /// request digest are the vector's.
    function test_the_deployed_domain_matches_the_vector() public {
        uint256 i = 3;
        vm.chainId(vm.parseJsonUint(json, _at(i, "typedData.domain.chainId")));
        address at = vm.parseJsonAddress(json, _at(i, "typedData.domain.verifyingContract"));
        vm.etch(at, address(new LloomSettlement(1 days)).code);
        LloomSettlement deployed = LloomSettlement(at);
        assertEq(deployed.domainSeparator(), _domainSeparator(i), "domain separator");
        assertEq(deployed.requestDigest(_request(i)), vm.parseJsonBytes32(json, _at(i, "digest")), "digest");
    }
}
