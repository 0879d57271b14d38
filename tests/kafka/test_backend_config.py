"""The Kafka client settings file: parsing and mapping to aiokafka arguments.

No broker needed: SASL and TLS against a real broker are tested elsewhere.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

from dnpfs.backends.kafka.config import ClientConfig, parse_properties
from dnpfs.errors import StoreError


def write(tmp_path, text):
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_properties_syntax():
    props = parse_properties(
        "# comment\n! also a comment\n\n  security.protocol = SASL_SSL  \n"
        "sasl.password=a=b:c\nsasl.username: alice\nsasl.username=bob\n"
    )
    assert props == {"security.protocol": "SASL_SSL", "sasl.password": "a=b:c",
                     "sasl.username": "bob"}
    with pytest.raises(StoreError, match="line 2: expected key=value"):
        parse_properties("security.protocol=SSL\njust words\n", "f")


def test_defaults_are_plaintext(tmp_path):
    assert ClientConfig.load(None).client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert ClientConfig.load(write(tmp_path, "# nothing\n")).client_kwargs() == {
        "security_protocol": "PLAINTEXT"}


def test_sasl_plaintext_maps_to_aiokafka_arguments(tmp_path):
    config = ClientConfig.load(write(tmp_path, (
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=scram-sha-512\n"
        "sasl.username=dnpfs\nsasl.password=s3cret\n")))
    assert config.client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "dnpfs",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in config.describe() and "sasl.password=***" in config.describe()
    assert "s3cret" not in repr(config.describe())


@pytest.mark.parametrize("text, message", [
    ("sasl.mechnism=PLAIN\n", "unknown setting 'sasl.mechnism'"),
    ("group.id=mine\n", "unknown setting 'group.id'"),
    ("security.protocol=TLS\n", "security.protocol must be one of"),
    ("security.protocol=SASL_SSL\nsasl.mechanism=MAGIC\n", "sasl.mechanism must be one of"),
    ("security.protocol=SASL_SSL\nsasl.username=u\n", "needs sasl.username and sasl.password"),
    ("sasl.username=u\nsasl.password=p\n", "needs security.protocol SASL_"),
    ("ssl.ca.location=/etc/hosts\n", "needs security.protocol SSL"),
    ("security.protocol=SSL\nssl.ca.location=/no/such/ca.pem\n", "no such file"),
    ("security.protocol=SSL\nssl.endpoint.identification.algorithm=maybe\n",
     "https or none"),
    ("security.protocol=SSL\nssl.key.location=/etc/hosts\n", "go together"),
    ("check.crcs=no\n", "check.crcs must be true or false"),
])
def test_mistakes_are_one_clear_line(tmp_path, text, message):
    with pytest.raises(StoreError, match=message) as info:
        ClientConfig.load(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_check_crcs_is_on_unless_the_file_turns_it_off(tmp_path):
    # librdkafka's key (kcat -F reads it too), with the Java consumer's default.
    assert ClientConfig.load(None).check_crcs is True
    assert ClientConfig.load(write(tmp_path, "check.crcs=true\n")).check_crcs is True
    config = ClientConfig.load(write(tmp_path, "check.crcs = False\n"))
    assert config.check_crcs is False
    assert config.client_kwargs() == {"security_protocol": "PLAINTEXT"}  # not aiokafka's


def test_kcat_style_file_with_bootstrap_servers(tmp_path):
    # The same file can serve `kcat -F`; the address itself comes from the mount command.
    config = ClientConfig.load(write(tmp_path, "bootstrap.servers=127.0.0.1:39094\n"
                                               "security.protocol=PLAINTEXT\n"))
    assert config.bootstrap == "127.0.0.1:39094"
    assert config.client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_unreadable_file(tmp_path):
    with pytest.raises(StoreError, match="cannot read Kafka config"):
        ClientConfig.load(tmp_path / "missing.properties")


def test_secrets_never_appear_in_errors(tmp_path):
    with pytest.raises(StoreError) as info:
        ClientConfig.load(write(tmp_path, "sasl.password=hunter2\nsasl.username=u\n"))
    assert "hunter2" not in str(info.value)


OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl to make a test certificate")
@pytest.mark.parametrize("check, expected", [("https", True), ("none", False), ("", False)])
def test_ssl_settings_build_a_verifying_context(tmp_path, check, expected):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=dnpfs-test"],
                   check=True, capture_output=True)
    config = ClientConfig.load(write(tmp_path, (
        f"security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password=p\n"
        f"ssl.ca.location={cert}\nssl.certificate.location={cert}\nssl.key.location={key}\n"
        f"ssl.endpoint.identification.algorithm={check}\n")))
    kwargs = config.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is expected
    assert kwargs["security_protocol"] == "SASL_SSL"


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl to make a test certificate")
def test_encrypted_key_without_password_fails_instead_of_prompting(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:pw",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=dnpfs-test"],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    config = ClientConfig.load(write(tmp_path, (
        f"security.protocol=SSL\nssl.certificate.location={cert}\nssl.key.location={key}\n")))
    with pytest.raises(StoreError, match="cannot set up TLS"):
        config.client_kwargs()
    with_password = ClientConfig.load(write(tmp_path, (
        f"security.protocol=SSL\nssl.certificate.location={cert}\nssl.key.location={key}\n"
        "ssl.key.password=pw\n")))
    assert isinstance(with_password.client_kwargs()["ssl_context"], ssl.SSLContext)
