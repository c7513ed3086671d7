"""Real text for the attention-dynamics experiments: the WikiText reader and co-occurrence statistics.

``from dynamics.corpus import load_wikitext`` reads a WikiText directory (``$DYNAMICS_WIKITEXT``) into
an encoded corpus; :mod:`dynamics.corpus.cooccurrence` computes P(l | m, n) and the token roles of
Scan and Snap (Tian et al. 2023, Sec. 3.2) from it.
"""

from .wikitext import ENV_DATA, EOS, UNK, WikiText, check_wikitext, load_wikitext, load_wikitext_bytes

__all__ = ["ENV_DATA", "UNK", "EOS", "WikiText", "check_wikitext", "load_wikitext",
           "load_wikitext_bytes"]
