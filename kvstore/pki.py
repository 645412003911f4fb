"""X.509 building blocks shared by the store's --auto-tls and `grove certs`.

Both make certificates the same way: one builder for the fields and the constraints every
certificate here carries (CA or not, the key usages kubeadm and etcd set, extended usages, SANs),
and private keys written so only their owner can read them. It lives in kvstore because the store
imports nothing of the other parts, while `grove` may import the store. Pure except
`write_private`, which is the one file write both callers need.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

# Certificates start a little in the past so a peer whose clock is behind accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def build_certificate(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    signing_key: CertificateIssuerPrivateKeyTypes,
    now: datetime.datetime,
    not_after: datetime.datetime,
    *,
    ca: bool,
    usages: Iterable[x509.ObjectIdentifier] = (),
    sans: Iterable[x509.GeneralName] = (),
    extensions: Iterable[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A certificate for `public_key` signed by `signing_key` (SHA-256): valid from `now` (less
    CLOCK_SKEW) to `not_after`, a CA (may sign certificates) or not, for digital signatures and key
    encipherment, with extended key `usages`, subject alternative names `sans` and any further
    non-critical `extensions`."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    usages = list(usages)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans = list(sans)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def write_private(path: str, data: bytes) -> None:
    """Write a file only its owner can read (0600), replacing what was there."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
