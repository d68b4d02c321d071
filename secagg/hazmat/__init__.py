"""Low-level cryptographic building blocks.

.. danger::
   This is a "hazardous materials" layer, in the sense of ``cryptography.hazmat``. Every function
   here is correct only when used exactly as the recipes in :mod:`secagg.masking` and
   :mod:`secagg.ckks` use it: reusing a context, a nonce or a key across purposes breaks security
   silently. Applications, ``clients/`` and ``server/`` must use the recipes, never this package.

Nothing here implements a cipher, hash, curve, KDF or RNG: X25519, Ed25519, HKDF-SHA256,
AES-256-CTR and ChaCha20-Poly1305 come from ``cryptography``; randomness from ``os.urandom`` via
``secrets``. The one primitive written here is Shamir secret sharing (:mod:`.shamir`).
"""
