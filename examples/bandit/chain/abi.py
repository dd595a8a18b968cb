"""The slice of the Solidity ABI Bandit needs: static words, strings, and call data.

Selectors are the first 4 bytes of keccak-256 of the signature. Python's ``hashlib.sha3_256``
is the NIST variant, not keccak, so the v2-core/ERC-20 ones are written out here (those of our
own contracts come from solc's ``methodIdentifiers`` in ``build/``);
``tests/bandit/test_live_chain`` checks each one against the node's own ``web3_sha3``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "SELECTORS",
    "AbiError",
    "address_word",
    "call_data",
    "decode_address",
    "decode_string",
    "decode_words",
    "encode_args",
    "hex_address",
]

SELECTORS: dict[str, str] = {
    "approve(address,uint256)": "095ea7b3",
    "balanceOf(address)": "70a08231",
    "createPair(address,address)": "c9c65396",
    "decimals()": "313ce567",
    "getPair(address,address)": "e6a43905",
    "getReserves()": "0902f1ac",
    "mint(address)": "6a627842",
    "symbol()": "95d89b41",
    "token0()": "0dfe1681",
    "token1()": "d21220a7",
    "transfer(address,uint256)": "a9059cbb",
}

Arg = int | bytes | str


class AbiError(ValueError):
    """A value cannot be ABI-encoded, or a return value does not decode."""


def hex_address(address: bytes) -> str:
    """``0x``-prefixed lower-case hex of a 20-byte address."""
    return "0x" + address.hex()


def address_word(address: bytes) -> bytes:
    if len(address) != 20:
        raise AbiError(f"an address is 20 bytes, got {len(address)}: 0x{address.hex()}")
    return bytes(12) + address


def _word(value: int) -> bytes:
    if not 0 <= value < 2**256:
        raise AbiError(f"{value} does not fit a uint256")
    return value.to_bytes(32, "big")


def encode_args(args: Sequence[Arg]) -> bytes:
    """Head/tail encoding of ``args``: ``int`` is uint256, 20 ``bytes`` an address, ``str`` a
    dynamic string (the only dynamic type Bandit passes: a token's symbol)."""
    heads: list[bytes | None] = []
    tails: list[bytes] = []
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, int | bytes | str):
            raise AbiError(f"cannot ABI-encode {arg!r}: Bandit passes ints, addresses, strings")
        if isinstance(arg, int):
            heads.append(_word(arg))
        elif isinstance(arg, bytes):
            heads.append(address_word(arg))
        else:
            raw = arg.encode()
            heads.append(None)
            tails.append(_word(len(raw)) + raw + bytes(-len(raw) % 32))
    offset = 32 * len(heads)
    out, tail_iter = [], iter(tails)
    body = b""
    for head in heads:
        if head is not None:
            out.append(head)
            continue
        tail = next(tail_iter)
        out.append(_word(offset + len(body)))
        body += tail
    return b"".join(out) + body


def call_data(signature: str, *args: Arg, selectors: dict[str, str] | None = None) -> str:
    """``0x`` + selector + encoded arguments, for ``eth_call``/``eth_sendTransaction``."""
    table = selectors if selectors is not None else SELECTORS
    try:
        selector = table[signature]
    except KeyError:
        raise AbiError(f"no selector known for {signature!r}\n"
                       "help: add it to bandit.chain.abi.SELECTORS (and run the live tests, "
                       "which check every selector against the node's web3_sha3)") from None
    return "0x" + selector + encode_args(args).hex()


def _bytes(result: str, what: str) -> bytes:
    if not isinstance(result, str) or not result.startswith("0x"):
        raise AbiError(f"{what}: expected 0x-prefixed hex, got {result!r:.80}")
    return bytes.fromhex(result[2:])


def decode_words(result: str, count: int, what: str = "return value") -> list[int]:
    """The first ``count`` 32-byte words of a return value, as ints."""
    raw = _bytes(result, what)
    if len(raw) < 32 * count:
        raise AbiError(f"{what}: {len(raw)} bytes, expected at least {32 * count}\n"
                       "help: is the address a contract of the expected kind?")
    return [int.from_bytes(raw[i * 32 : (i + 1) * 32], "big") for i in range(count)]


def decode_address(result: str, what: str = "return value") -> bytes:
    (word,) = decode_words(result, 1, what)
    if word >> 160:
        raise AbiError(f"{what}: {word:#x} is not an address")
    return word.to_bytes(20, "big")


def decode_string(result: str, what: str = "return value") -> str:
    raw = _bytes(result, what)
    try:
        offset = int.from_bytes(raw[:32], "big")
        length = int.from_bytes(raw[offset : offset + 32], "big")
        text = raw[offset + 32 : offset + 32 + length]
        if len(text) != length:
            raise ValueError("truncated")
        return text.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise AbiError(f"{what} is not an ABI-encoded string ({exc})") from None
