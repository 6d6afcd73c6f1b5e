"""Real files with real metadata for the provenance tests: C2PA manifests signed with c2pa-python's Builder by a
CA and signing certificate made here (the cryptography package), generator text chunks, XMP packets, EXIF."""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from forensics.synthetic import natural_image

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass
class TestCA:
    ca_pem: bytes
    chain_pem: bytes
    key_pem: bytes


def make_ca() -> TestCA:
    """A root CA and an end-entity signing certificate (ES256) that C2PA validators accept."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gscan test CA")])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("gscan test root")).issuer_name(name("gscan test root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("gscan test generator")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return TestCA(pem(ca), pem(leaf) + pem(ca), key_pem)


def image_bytes(fmt: str, seed: int = 0, size: int = 96, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(natural_image(np.random.default_rng(seed), size, size)).save(buf, format=fmt, **save)
    return buf.getvalue()


def signed(ca: TestCA, fmt: str, source_type: str, tool: str = "Test Generative Tool", seed: int = 0) -> bytes:
    """An image of format fmt with a C2PA manifest whose one action is c2pa.created with this digital source
    type, signed by the test CA's end-entity certificate."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": tool, "version": "1.0"}], "title": f"image.{fmt.lower()}",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": DST + source_type,
                     "softwareAgent": {"name": tool}}]}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.key_pem, None))
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, MIME[fmt], io.BytesIO(image_bytes(fmt, seed)), out)
    return out.getvalue()


def tampered_jpeg(data: bytes) -> bytes:
    """The JPEG with one byte of its entropy-coded data changed after signing: still decodes, binding broken."""
    changed = bytearray(data)
    pos = len(data) - 200
    while changed[pos] in (0x00, 0xFF) or changed[pos - 1] == 0xFF:
        pos -= 1
    changed[pos] ^= 0x01
    return bytes(changed)


def png_with_text(chunks: dict[str, str], seed: int = 1, compressed: bool = False) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=compressed)
    return image_bytes("PNG", seed, pnginfo=info)


A1111_PARAMETERS = ("a portrait of a cat, studio light\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, "
                    "CFG scale: 7, Seed: 1234, Size: 512x512, Model: v1-5-pruned")


def comfy_chunks(checkpoint: str = "sd_xl_base_1.0.safetensors") -> dict[str, str]:
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
              "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20}}}
    return {"prompt": json.dumps(prompt), "workflow": json.dumps({"nodes": [{"id": 4}], "links": []})}


def xmp_packet(source_type: str) -> bytes:
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" Iptc4xmpExt:DigitalSourceType="'
            + (DST + source_type).encode() + b'"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def jpeg_with_exif(**tags) -> bytes:
    """A JPEG whose EXIF holds the given tags (Make, Model, Software, UserComment as raw bytes)."""
    exif = Image.Exif()
    ids = {"Make": 0x010F, "Model": 0x0110, "Software": 0x0131, "ImageDescription": 0x010E}
    for name, value in tags.items():
        if name == "UserComment":
            exif.get_ifd(0x8769)[0x9286] = value
        else:
            exif[ids[name]] = value
    return image_bytes("JPEG", 3, exif=exif.tobytes())


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
