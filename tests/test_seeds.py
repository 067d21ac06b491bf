"""Per-item seeds (docs/BENCHMARK.md §2.7): cli_common.seed64 and cli_common.item_rng against the
documented formula, worked out here with hashlib and numpy, never with the toolkit's own code.

seed64 = the first 8 bytes, read as a little-endian unsigned integer, of SHA-256 over the UTF-8 text
"{seed}|{kind}|{corruption}|{s}|{input file name}"; rng = Generator(PCG64(seed64)).
"""

import hashlib

import numpy as np
import pytest

from cli_common import item_rng, seed64

TEXT = b"0|rafdb-c|contrast|3|test_0001_aligned.jpg"


def documented_seed(text: bytes) -> int:
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def test_seed64_is_the_little_endian_first_8_bytes_of_sha256():
    assert seed64(0, "rafdb-c", "contrast", 3, "test_0001_aligned.jpg") == documented_seed(TEXT)
    # the digest of TEXT starts 61 bc d7 29 c3 ee d6 8a; read little-endian (last byte most significant):
    assert hashlib.sha256(TEXT).digest()[:8].hex() == "61bcd729c3eed68a"
    assert seed64(0, "rafdb-c", "contrast", 3, "test_0001_aligned.jpg") == 0x8AD6EEC329D7BC61
    # read big-endian it would be another number
    assert 0x8AD6EEC329D7BC61 != int.from_bytes(hashlib.sha256(TEXT).digest()[:8], "big")


def test_seed64_joins_the_parts_with_a_bar_and_hashes_utf8():
    # the §2.7 example, and a seed and file name that are not the defaults
    assert seed64(0, "rafdb-c", "spatter", 3, "test_0001_aligned.jpg") == \
        documented_seed(b"0|rafdb-c|spatter|3|test_0001_aligned.jpg")
    assert seed64(17, "rafdb-p", "p_rotate", 0, "test_3068.jpg") == \
        documented_seed(b"17|rafdb-p|p_rotate|0|test_3068.jpg")
    # a non-ASCII file name is hashed as UTF-8 bytes (e with diaeresis = c3 ab)
    assert seed64(0, "rafdb-c", "contrast", 3, "t\u00ebst.jpg") == \
        documented_seed(b"0|rafdb-c|contrast|3|t\xc3\xabst.jpg")
    assert seed64(0, "rafdb-c", "contrast", 3, "test_0001_aligned.jpg") != \
        documented_seed(b"0:rafdb-c:contrast:3:test_0001_aligned.jpg")


def test_item_rng_is_pcg64_of_the_documented_seed():
    rng = item_rng(0, "rafdb-c", "contrast", 3, "test_0001_aligned.jpg")
    reference = np.random.Generator(np.random.PCG64(documented_seed(TEXT)))
    assert isinstance(rng.bit_generator, np.random.PCG64)
    np.testing.assert_array_equal(rng.bit_generator.random_raw(4), reference.bit_generator.random_raw(4))
    np.testing.assert_array_equal(rng.random(5), reference.random(5))
    np.testing.assert_array_equal(rng.integers(0, 2 ** 32, 5), reference.integers(0, 2 ** 32, 5))


@pytest.mark.parametrize("seed, kind, name, severity, file_name, text", [
    # item_rng(seed, kind, name, severity, file name): that order in the hashed text (§2.7)
    (0, "rafdb-c", "contrast", 3, "test_0001_aligned.jpg", TEXT),
    (5, "rafdb-c", "gaussian_noise", 1, "test_0002_aligned.jpg", b"5|rafdb-c|gaussian_noise|1|test_0002_aligned.jpg"),
    (0, "rafdb-p", "p_gaussian_noise", 0, "test_0001.jpg", b"0|rafdb-p|p_gaussian_noise|0|test_0001.jpg"),
])
def test_item_rng_argument_order(seed, kind, name, severity, file_name, text):
    first = item_rng(seed, kind, name, severity, file_name).bit_generator.random_raw(3)
    expected = np.random.PCG64(documented_seed(text)).random_raw(3)
    np.testing.assert_array_equal(first, expected)
    # the severity and the name swapped in the text give another stream
    swapped = b"|".join([str(seed).encode(), kind.encode(), str(severity).encode(), name.encode(),
                         file_name.encode()])
    assert not np.array_equal(first, np.random.PCG64(documented_seed(swapped)).random_raw(3))
