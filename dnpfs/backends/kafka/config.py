"""The Kafka client settings file (``--kafka-config FILE``).

Java-properties style, with the key names Kafka users know from librdkafka
and kcat, so one file can serve both::

    # comments start with # or !
    security.protocol = SASL_SSL
    sasl.mechanism = SCRAM-SHA-512
    sasl.username = dnpfs
    sasl.password = s3cret
    ssl.ca.location = /etc/kafka/ca.pem

``bootstrap.servers`` is accepted (kcat reads it) but the address given to
``dnpfs mount --kafka`` is the one used.

Unknown keys are refused (a typo must not silently disable TLS).  Secrets are
never logged or shown: ``ClientConfig.describe()`` masks them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import StoreError
from ...logs import register_secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
KEYS = (
    "bootstrap.servers",  # for kcat -F; the address given to dnpfs mount wins
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "check.crcs",  # verify each fetched batch's CRC32C (default true; librdkafka's: false)
)
SECRET_KEYS = ("sasl.password", "ssl.key.password")


def parse_properties(text: str, source: str = "config") -> dict[str, str]:
    """``key=value`` / ``key: value`` lines; ``#`` and ``!`` start comments.
    Later keys win, as in Java.  No escapes or continuation lines."""
    props: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise StoreError(f"{source}, line {number}: expected key=value")
        props[line[:cut].strip()] = line[cut + 1 :].strip()
    return props


@dataclass(frozen=True)
class ClientConfig:
    """Settings shared by every aiokafka client of a mount."""

    properties: dict[str, str] = field(default_factory=dict)
    source: str = "defaults"

    @classmethod
    def load(cls, path: Path | str | None) -> ClientConfig:
        if path is None:
            return cls()
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise StoreError(f"cannot read Kafka config {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise StoreError(f"cannot read Kafka config {path}: not text") from None
        return cls.from_properties(parse_properties(text, str(path)), str(path))

    @classmethod
    def from_properties(cls, props: dict[str, str], source: str = "config") -> ClientConfig:
        unknown = sorted(set(props) - set(KEYS))
        if unknown:
            raise StoreError(
                f"{source}: unknown setting {unknown[0]!r}; known: {', '.join(KEYS)}"
            )
        for key in SECRET_KEYS:
            register_secret(props.get(key, ""))
        config = cls(dict(props), source)
        config.client_kwargs(build_ssl=False)  # validate now, build the SSL context later
        config.check_crcs  # noqa: B018 - validated now too
        return config

    @property
    def bootstrap(self) -> str | None:
        return self.properties.get("bootstrap.servers")

    @property
    def protocol(self) -> str:
        return self.properties.get("security.protocol", "PLAINTEXT").upper()

    @property
    def check_crcs(self) -> bool:
        """Verify the CRC32C of every record batch fetched.  On by default, as
        in Kafka's Java consumer: a batch corrupted on the broker's disk or on
        the way becomes EIO instead of bytes handed out as good.  librdkafka
        (kcat) checks nothing by default; ``check.crcs=false`` reads the same
        way (docs/decisions.md, "CRCs checked on reads")."""
        raw = self.properties.get("check.crcs", "true").strip().lower()
        if raw not in ("true", "false"):
            raise StoreError(f"{self.source}: check.crcs must be true or false, not {raw!r}")
        return raw == "true"

    def describe(self) -> str:
        """The settings with secrets masked: safe for logs."""
        shown = {k: ("***" if k in SECRET_KEYS else v) for k, v in sorted(self.properties.items())}
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"

    def client_kwargs(self, build_ssl: bool = True) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient/Client."""
        p = self.properties
        where = self.source
        protocol = self.protocol
        if protocol not in PROTOCOLS:
            raise StoreError(f"{where}: security.protocol must be one of {', '.join(PROTOCOLS)}")
        kwargs: dict[str, Any] = {"security_protocol": protocol}
        uses_sasl = protocol.startswith("SASL_")
        uses_ssl = protocol.endswith("SSL")
        if uses_sasl:
            mechanism = p.get("sasl.mechanism", "PLAIN").upper()
            if mechanism not in MECHANISMS:
                raise StoreError(f"{where}: sasl.mechanism must be one of {', '.join(MECHANISMS)}")
            kwargs["sasl_mechanism"] = mechanism
            if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                if "sasl.username" not in p or "sasl.password" not in p:
                    raise StoreError(f"{where}: sasl.mechanism {mechanism} needs"
                                     " sasl.username and sasl.password")
                kwargs["sasl_plain_username"] = p["sasl.username"]
                kwargs["sasl_plain_password"] = p["sasl.password"]
        else:
            stray = [k for k in p if k.startswith("sasl.")]
            if stray:
                raise StoreError(f"{where}: {stray[0]} needs security.protocol SASL_PLAINTEXT"
                                 " or SASL_SSL")
        ssl_keys = [k for k in p if k.startswith("ssl.")]
        if not uses_ssl:
            if ssl_keys:
                raise StoreError(f"{where}: {ssl_keys[0]} needs security.protocol SSL or SASL_SSL")
            return kwargs
        check = p.get("ssl.endpoint.identification.algorithm", "https").lower()
        if check not in ("https", "none", ""):
            raise StoreError(f"{where}: ssl.endpoint.identification.algorithm must be"
                             " https or none")
        if ("ssl.key.location" in p) != ("ssl.certificate.location" in p):
            raise StoreError(f"{where}: ssl.certificate.location and ssl.key.location"
                             " go together")
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            if key in p and not Path(p[key]).is_file():
                raise StoreError(f"{where}: {key}: no such file {p[key]}")
        if build_ssl:
            kwargs["ssl_context"] = self._ssl_context(check == "https")
        return kwargs

    def _ssl_context(self, check_hostname: bool) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        p = self.properties
        try:
            context = create_ssl_context(
                cafile=p.get("ssl.ca.location"),
                certfile=p.get("ssl.certificate.location"),
                keyfile=p.get("ssl.key.location"),
                # Never None: OpenSSL would prompt on the terminal for an encrypted key.
                password=p.get("ssl.key.password", ""),
            )
        except (OSError, ssl.SSLError) as e:
            raise StoreError(f"{self.source}: cannot set up TLS: {e}") from None
        context.check_hostname = check_hostname
        if not check_hostname:
            context.verify_mode = ssl.CERT_REQUIRED  # still verify the chain
        return context
