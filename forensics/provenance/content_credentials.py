"""C2PA manifests (Content Credentials) read and validated by the CAI's reference implementation (c2pa-python),
offline: no remote manifest, no OCSP, no trust list fetched. Only files whose container holds a manifest store
reach the library (forensics/provenance/containers.py finds it); what it says becomes Claims."""

from __future__ import annotations

import io
import json
import threading

from .claims import Claim
from .metadata import short
from .signatures import CAPTURED, DIGITAL_SOURCE_TYPES, EDITED, GENERATED, GENERATOR_NAMES, source_type_name

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "AVIF": "image/avif", "HEIF": "image/heif",
        "TIFF": "image/tiff", "GIF": "image/gif"}
MAX_MANIFESTS, MAX_ASSERTIONS, MAX_ACTIONS = 16, 64, 64
BINDING_OK = ("assertion.dataHash.match", "assertion.bmffHash.match", "assertion.boxesHash.match",
              "assertion.collectionHash.match")
_local = threading.local()


class C2paUnavailable(Exception):
    """c2pa-python is not importable here (or its native library would not load)."""


def _context(trust_pem: str):
    """One c2pa Context per thread and trust list: contexts are cheap (0.2 ms) but not shared across threads."""
    cache = getattr(_local, "contexts", None)
    if cache is None:
        cache = _local.contexts = {}
    if trust_pem not in cache:
        try:
            import c2pa
        except (ImportError, OSError) as exc:
            raise C2paUnavailable(str(exc)) from None
        settings = {"verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}}
        if trust_pem:
            settings["trust"] = {"trust_anchors": trust_pem}
        cache[trust_pem] = c2pa.Context(c2pa.Settings.from_json(json.dumps(settings)))
    return cache[trust_pem]


def manifest_store(data: bytes, fmt: str, trust_pem: str) -> dict | None:
    """The validated manifest store as c2pa-python reports it (JSON), or None when the file has none.
    Raises C2paUnavailable, or the library's own errors for a manifest it cannot parse."""
    import c2pa

    reader = c2pa.Reader.try_create(MIME[fmt], io.BytesIO(data), None, _context(trust_pem))
    if reader is None:
        return None
    with reader:
        return json.loads(reader.json())


def _software(agent) -> str:
    if isinstance(agent, dict):
        return str(agent.get("name") or "")
    return str(agent or "")


def _actions(manifest: dict) -> list[dict]:
    actions = []
    for assertion in (manifest.get("assertions") or [])[:MAX_ASSERTIONS]:
        if isinstance(assertion, dict) and str(assertion.get("label", "")).startswith("c2pa.actions"):
            data = assertion.get("data") if isinstance(assertion.get("data"), dict) else {}
            actions.extend(a for a in (data.get("actions") or [])[:MAX_ACTIONS] if isinstance(a, dict))
    return actions


def _claim_generator(manifest: dict) -> str:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return " ".join(str(info[0].get(k) or "") for k in ("name", "version")).strip()
    return str(manifest.get("claim_generator") or "")


def _statement(manifest: dict) -> tuple[str, str]:
    """The kind the manifest's actions declare (the strongest) and what it says, as a phrase."""
    kinds, said = [], []
    for action in _actions(manifest):
        term = source_type_name(str(action.get("digitalSourceType") or ""))
        kind = DIGITAL_SOURCE_TYPES.get(term, "")
        name = str(action.get("action") or "").removeprefix("c2pa.")
        agent = _software(action.get("softwareAgent"))
        if not term and name == "created" and GENERATOR_NAMES.search(agent[:200]):
            # an older manifest that names its generator but no digital source type
            kind, term = GENERATED, "(no digital source type; the software agent is a generator)"
        if term or kind:
            kinds.append(kind)
            said.append(f"{name} {term}".strip())
    kind = next((k for k in (GENERATED, EDITED, CAPTURED) if k in kinds), "")
    by = _software(next((a.get("softwareAgent") for a in _actions(manifest) if a.get("softwareAgent")), "")) \
        or _claim_generator(manifest)
    phrase = ", ".join(dict.fromkeys(said)) or "no digital source type"
    return kind, f"{short(phrase, 160)} by {short(by or 'an unnamed tool', 80)}"


def _validation(store: dict, trusting: bool) -> str:
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = [str(f.get("code")) for f in results.get("failure") or [] if isinstance(f, dict)]
    successes = [str(s.get("code")) for s in results.get("success") or [] if isinstance(s, dict)]
    if not results:  # older stores report a flat validation_status list of failures
        failures = [str(f.get("code")) for f in store.get("validation_status") or [] if isinstance(f, dict)]
    signature = ("signature invalid" if any(c.startswith("claimSignature.") for c in failures)
                 else "signature valid" if "claimSignature.validated" in successes else "signature not validated")
    broken = [c for c in failures if c.startswith("assertion.") and c.endswith("mismatch")]
    binding = (f"binding broken ({', '.join(sorted(set(broken))[:3])}: the file changed after signing)" if broken
               else "binding intact" if any(c in successes for c in BINDING_OK) else "binding not checked")
    if "signingCredential.trusted" in successes and signature != "signature valid":
        # a trusted certificate on a signature that does not hold says nothing of who signed these bytes
        trust = "signer's certificate is in the --c2pa-trust anchors, but the signature does not hold"
    elif "signingCredential.trusted" in successes:
        trust = "signer trusted by --c2pa-trust"
    elif trusting:
        trust = "signer not in the --c2pa-trust anchors"
    else:
        trust = "signer not checked against a trust list"
    other = [c for c in failures if c.startswith("signingCredential.") and c != "signingCredential.untrusted"]
    return "; ".join([signature, binding, trust] + [short(c, 60) for c in other[:2]])


def c2pa_claims(store: dict, trusting: bool) -> list[Claim]:
    """Claims of a manifest store: the active manifest's, and any ingredient manifest that declares generation
    (an edit of a generated image is still made with AI)."""
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    active = manifests.get(store.get("active_manifest")) or {}
    kind, phrase = _statement(active)
    signer = active.get("signature_info") or {}
    who = " ".join(filter(None, [short(str(signer.get("common_name") or ""), 80),
                                 f"({short(str(signer.get('issuer')), 80)})" if signer.get("issuer") else ""]))
    claims = [Claim(kind, f"c2pa: {phrase}; signed by {who or 'an unnamed signer'}; {_validation(store, trusting)}")]
    for label, manifest in list(manifests.items())[:MAX_MANIFESTS]:
        if label == store.get("active_manifest") or not isinstance(manifest, dict):
            continue
        ingredient_kind, ingredient_phrase = _statement(manifest)
        if ingredient_kind in (GENERATED, EDITED):
            claims.append(Claim(EDITED, f"c2pa ingredient: {ingredient_phrase}"))
    return claims
