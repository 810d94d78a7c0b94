"""banger: disposable Linux microVMs on a developer's workstation."""

import warnings

__version__ = "0.1.0"

# asyncssh still reads cryptography's DSA classes when it is imported
# (asyncssh/crypto/misc.py), and cryptography >= 51 answers that with a
# CryptographyDeprecationWarning (a UserWarning). It is about asyncssh's code,
# not banger's, so users must not see it in the CLI's output or bangerd.log.
# Narrow on purpose: that message, raised from asyncssh's modules only; the
# category is matched through its base class so that this filter, which every
# banger process runs first, does not import cryptography. The test suite
# carries the same filter in pyproject.toml (pytest resets filters per test).
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=UserWarning, module=r"asyncssh\."
)
