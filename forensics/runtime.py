"""An ONNX Runtime session for an exported detector: providers chosen on purpose, card read from metadata."""

from __future__ import annotations

import ctypes
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .card import CARD_METADATA_KEY, ModelCard, quality_warnings
from .errors import DeviceError, GscanWarning, ModelError
from .tiling import Preprocessing

# exported_models/ beside forensics/ in a checkout; installed, it is the subpackage forensics.exported_models
_HERE = Path(__file__).resolve().parent
SHIPPED_MODELS_DIR = next((d for d in (_HERE / "exported_models", _HERE.parent / "exported_models") if d.is_dir()),
                          _HERE.parent / "exported_models")
DEFAULT_MODEL = "gscan-binary-effnetlite0"
USER_MODELS_ENV = "GSCAN_MODELS"


def user_models_dir() -> Path:
    """Where models you export by name live: $GSCAN_MODELS, else the user data folder (~/.local/share/gscan/models
    on Linux)."""
    if os.environ.get(USER_MODELS_ENV):
        return Path(os.environ[USER_MODELS_ENV])
    from platformdirs import user_data_path

    return user_data_path("gscan") / "models"


def model_dirs() -> list[Path]:
    """Searched in this order by --model NAME: your models first, then the shipped ones."""
    return [user_models_dir(), SHIPPED_MODELS_DIR]


def _searchable(folder: Path) -> bool:
    """Whether a model folder can be searched; one that cannot be read (a container whose HOME belongs to another
    user) is skipped with a warning, never a traceback."""
    try:
        return folder.is_dir() and (os.listdir(folder) is not None)
    except OSError as exc:
        warnings.warn(GscanWarning(f"model folder {folder} skipped: {exc.strerror or exc}"), stacklevel=2)
        return False


def export_target(name_or_path: str) -> Path:
    """`gscan export --out`: a bare name goes to the user model folder; anything else is a path to an .onnx file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".onnx":
        return candidate
    if len(candidate.parts) != 1 or not name_or_path.strip() or name_or_path.startswith("."):
        raise ModelError(f"--out takes a model name or a path ending in .onnx, not {name_or_path!r}")
    return user_models_dir() / f"{name_or_path}.onnx"


INT8_SUFFIX = ".int8.onnx"


def int8_path(path: Path) -> Path:
    """Where NAME.onnx's int8 variant for the CPU provider lives: NAME.int8.onnx beside it."""
    return Path(path).with_name(Path(path).name[: -len(".onnx")] + INT8_SUFFIX)


def _model_files() -> dict[str, Path]:
    """Every model that --model NAME can name; a user model shadows a shipped one of the same name. An int8
    variant is not a model of its own: a CPU scan of NAME picks it (cpu_variant)."""
    found: dict[str, Path] = {}
    for folder in reversed(model_dirs()):
        if _searchable(folder):
            found.update({p.stem: p for p in sorted(folder.glob("*.onnx")) if not p.name.endswith(INT8_SUFFIX)})
    return found


def cpu_variant(path: Path, device: str) -> Path:
    """NAME.int8.onnx instead of NAME.onnx when the scan runs on the CPU provider and the variant exists."""
    variant = int8_path(path)
    if variant.is_file() and "CUDAExecutionProvider" not in choose_providers(device):
        return variant
    return path


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees; 0 when there is no driver (onnxruntime-gpu lists CUDA regardless)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def choose_providers(device: str) -> list[str]:
    """CUDA then CPU for auto on a GPU machine, CPU alone otherwise; never TensorRT by default."""
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda")
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    if device == "cuda" and not cuda_ok:
        raise DeviceError("--device cuda was asked for, but no CUDA GPU is usable here "
                          "(needs an NVIDIA driver and onnxruntime-gpu)")
    if device != "cpu" and cuda_ok:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # finds the pip-installed CUDA and cuDNN libraries
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


CUDA_OPTIONS = {
    # EXHAUSTIVE (ORT's default) benchmarks every convolution again for each new input shape: measured on an H100,
    # a scan whose batches varied by a few tiles ran at 17 images/s, slower than 16 CPU cores (60 images/s).
    "cudnn_conv_algo_search": "HEURISTIC",
}
CUDA_BATCH_MULTIPLE = 16  # CUDA batches are padded up to a multiple of this: few shapes, little waste


def _with_options(providers: list[str]) -> list:
    return [(p, CUDA_OPTIONS) if p == "CUDAExecutionProvider" else p for p in providers]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(name_or_path: str | None) -> Path:
    """A shipped model's name (from exported_models/), or a path to an .onnx file."""
    name = name_or_path or DEFAULT_MODEL
    candidate = Path(name)
    if candidate.suffix == ".onnx" or candidate.is_file():
        if not candidate.is_file():
            raise ModelError(f"model file {candidate} does not exist")
        return candidate
    known = _model_files()
    if name not in known:
        raise ModelError(f"no model named {name!r} in {' or '.join(map(str, model_dirs()))} "
                         f"(known: {', '.join(sorted(known)) or 'none'})")
    return known[name]


@dataclass
class ModelInfo:
    path: Path
    card: ModelCard

    @property
    def shipped(self) -> bool:
        return self.path.parent == SHIPPED_MODELS_DIR

    @property
    def int8(self) -> Path | None:
        """The int8 variant a CPU scan runs instead, if there is one."""
        return int8_path(self.path) if int8_path(self.path).is_file() else None


def list_models() -> list[ModelInfo]:
    """Every model --model NAME finds (yours and the shipped ones), with its card from the JSON beside it."""
    out = []
    for path in sorted(_model_files().values(), key=lambda p: (p.parent != SHIPPED_MODELS_DIR, p.stem)):
        card_path = path.with_suffix(".json")
        if card_path.is_file():
            out.append(ModelInfo(path, ModelCard.load(card_path)))
    return out


class Detector:
    """One ONNX Runtime session; `run` maps normalised tiles to logits and last-stage feature maps."""

    def __init__(self, path: Path, device: str = "auto", intra_threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        self.sha256 = sha256_file(self.path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = intra_threads
        # ORT's pool threads spin between ops by default, taking the cores a scan's decode threads need: off, a
        # scan on 2 cores ran 94-99 images/s instead of 68-74 (docs/RESULTS.md, "Scan throughput (cpu)")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        expected = self._expected_sha256()  # before ONNX Runtime parses a byte of a swapped file
        requested = choose_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=_with_options(requested))
        except Exception as exc:  # ORT raises its own types for unreadable or invalid files
            raise ModelError(f"cannot load ONNX model {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        if "CUDAExecutionProvider" in requested and "CUDAExecutionProvider" not in self.providers:
            if device == "cuda":
                raise DeviceError("CUDA was asked for but ONNX Runtime fell back to the CPU")
        self.card = self._read_card()
        self.card.onnx_sha256 = expected or self.sha256
        self._staging: np.ndarray | None = None  # CUDA input batches are assembled here
        self.exact: Detector | None = None  # an int8 variant's fp32 model, for images near the threshold
        self.all_tiles = False  # --tiles all: every tile of the grid, no adaptive tiling

    def _read_card(self) -> ModelCard:
        meta = self.session.get_modelmeta().custom_metadata_map
        if CARD_METADATA_KEY not in meta:
            raise ModelError(f"{self.path} carries no gscan model card in its metadata; export it with gscan export")
        return ModelCard.from_json(meta[CARD_METADATA_KEY])

    def _expected_sha256(self) -> str:
        """The sha256 the JSON card beside the model names ("" for a file given by path without one); a mismatch
        means the file was swapped, and a model found by name must always carry its hash."""
        side = self.path.with_suffix(".json")
        named = any(self.path.parent.resolve() == d.resolve() for d in model_dirs() if _searchable(d))
        if not side.is_file():
            if named:  # deleting the card cannot hide a swap
                raise ModelError(f"{self.path.name} has no card {side.name} beside it naming its sha256: it cannot "
                                 "be checked, so it is not loaded")
            return ""
        expected = ModelCard.load(side).onnx_sha256
        if not expected:
            raise ModelError(f"{side.name} names no onnx_sha256: {self.path.name} cannot be checked, so it is not "
                             "loaded (gscan export writes it)")
        if expected != self.sha256:
            raise ModelError(f"{self.path.name} has sha256 {self.sha256[:16]}..., but its card {side.name} names "
                             f"{expected[:16]}...: the model file is not the one the card describes")
        return expected

    @property
    def preprocessing(self) -> Preprocessing:
        """How this model's input tiles are made, from its card."""
        return Preprocessing.from_card(self.card, self.all_tiles)

    @property
    def device(self) -> str:
        return "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def run(self, tiles: np.ndarray | list[np.ndarray], with_cams: bool = False,
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N x classes) and, if asked and exported, per-class maps (N x classes x h x w), for a batch of
        tiles or a list of per-image tile arrays (assembled here, straight into the CUDA staging buffer)."""
        names = ["logits"] + ([self.card.heatmap] if with_cams and self.card.heatmap else [])
        outputs, n = self._outputs(tiles, names)
        self._check_shapes(outputs, n)
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)

    def _outputs(self, tiles: np.ndarray | list[np.ndarray], names: list[str]) -> tuple[list[np.ndarray], int]:
        """The named outputs for a batch of tiles (CPU provider, or IO binding on CUDA), and the tile count."""
        if self.device == "cuda":
            outputs = self.run_bound(tiles, names, "cuda")
        else:
            batch = np.concatenate(tiles) if isinstance(tiles, list) else tiles
            outputs = self.session.run(names, {"input": batch})
        return outputs, (sum(map(len, tiles)) if isinstance(tiles, list) else len(tiles))

    def run_outputs(self, tiles: np.ndarray | list[np.ndarray], names: list[str]) -> list[np.ndarray]:
        """The named outputs (logits first) for a batch of tiles; logits checked as run() checks them."""
        outputs, n = self._outputs(tiles, names)
        self._check_shapes(outputs[:1], n)
        if any(len(o) != n for o in outputs[1:]):
            raise ModelError(f"{self.path.name} returned {names[1:]} for another number of tiles than {n}")
        return outputs

    def _check_shapes(self, outputs: list[np.ndarray], n: int) -> None:
        """A model that answers in another shape than its card says is refused (ModelError), never read askew:
        one row of logits per tile, one column per class; maps of (tiles, classes, h, w)."""
        classes = len(self.card.classes)
        logits = outputs[0]
        if logits.ndim != 2 or logits.shape != (n, classes):
            raise ModelError(f"{self.path.name} returned logits of shape {tuple(logits.shape)} for {n} tiles; its "
                             f"card says {classes} classes, so ({n}, {classes}) was expected: the model is refused")
        if len(outputs) > 1 and (outputs[1].ndim != 4 or outputs[1].shape[:2] != (n, classes)):
            raise ModelError(f"{self.path.name} returned heatmaps of shape {tuple(outputs[1].shape)} for {n} tiles; "
                             f"({n}, {classes}, h, w) was expected: the model is refused")

    def check_contract(self, with_cams: bool) -> None:
        """Run two blank tiles through the model once, before any row: a model whose outputs do not match its
        card (shape, a missing heatmap output) is refused here, with exit 2, not discovered row by row."""
        outputs = {o.name for o in self.session.get_outputs()}
        if "logits" not in outputs:
            raise ModelError(f"{self.path.name} has no output named 'logits' (it has {', '.join(sorted(outputs))})")
        if self.card.heatmap and self.card.heatmap not in outputs:
            raise ModelError(f"{self.path.name}'s card names heatmap output {self.card.heatmap!r}, which the model "
                             "does not have: re-export it")
        if with_cams and not self.card.heatmap:
            raise ModelError(f"--cam-dir asks for heatmaps, but {self.path.name}'s card names no heatmap output")
        if self.card.open_set and self.card.open_set.get("features") not in outputs:
            raise ModelError(f"{self.path.name}'s open-set rule reads output {self.card.open_set.get('features')!r}, "
                             "which the model does not have")
        crop = self.card.tiling.crop
        self.run(np.zeros((2, 3, crop, crop), np.float32), with_cams=bool(with_cams and self.card.heatmap))

    def run_bound(self, tiles: np.ndarray | list[np.ndarray], names: list[str], device_type: str,
                  ) -> list[np.ndarray]:
        """Run through IO binding: one host-to-device copy of the batch, outputs allocated on the device and
        copied back once. The batch is padded up to a multiple of CUDA_BATCH_MULTIPLE in a staging buffer that is
        reused from call to call (no 25 MB allocation and zero-fill per batch)."""
        parts = tiles if isinstance(tiles, list) else [tiles]
        n = sum(len(p) for p in parts)
        padded = -(-n // CUDA_BATCH_MULTIPLE) * CUDA_BATCH_MULTIPLE
        shape = (padded, *parts[0].shape[1:])
        if self._staging is None or self._staging.shape[0] < padded or self._staging.shape[1:] != shape[1:]:
            self._staging = np.zeros(shape, dtype=np.float32)
        np.concatenate(parts, out=self._staging[:n])  # rows n..padded hold an earlier batch: their outputs are cut
        binding = self.session.io_binding()
        binding.bind_cpu_input("input", self._staging[:padded])
        for name in names:
            binding.bind_output(name, device_type)
        self.session.run_with_iobinding(binding)
        return [out[:n] for out in binding.copy_outputs_to_cpu()]


def _by_name_or_path(model: str | None, device: str) -> Path:
    """A model named (shipped or yours) runs as its int8 variant on the CPU when it has one; a file given by path
    runs as given."""
    path = resolve_model(model)
    named = model is None or (Path(model).suffix != ".onnx" and not Path(model).is_file())
    return cpu_variant(path, device) if named else path


def open_detector(path: Path, device: str = "auto", intra_threads: int = 0) -> Detector:
    """A Detector; an int8 variant whose card has a rescore_margin comes with the fp32 model it was quantized
    from (NAME.onnx beside it, the sha256 its card names), which scores the images near the threshold again."""
    detector = Detector(path, device=device, intra_threads=intra_threads)
    for problem in quality_warnings(detector.card):
        warnings.warn(GscanWarning(problem), stacklevel=2)
    if detector.card.rescore_margin > 0:
        detector.exact = _exact_model(detector, device, intra_threads)
    return detector


def _exact_model(variant: Detector, device: str, intra_threads: int) -> Detector:
    name = variant.path.name
    fp32 = variant.path.with_name(name[: -len(INT8_SUFFIX)] + ".onnx") if name.endswith(INT8_SUFFIX) else None
    if fp32 is None or not fp32.is_file():
        raise ModelError(f"{name} re-scores images near its threshold with its fp32 model, but there is no "
                         f"{fp32.name if fp32 else 'NAME.onnx for a file not named NAME.int8.onnx'} beside it")
    exact = Detector(fp32, device=device, intra_threads=intra_threads)
    expected = variant.card.metrics.get("int8", {}).get("fp32_sha256", "")
    if exact.sha256 != expected:
        raise ModelError(f"{name} was quantized from a model with sha256 {expected[:16]}..., but {fp32.name} "
                         f"has {exact.sha256[:16]}...: the pair does not belong together")
    return exact


def load_detectors(models: list[str] | None, device: str = "auto",
                   companion: bool = True) -> tuple[Detector, Detector | None]:
    """The model that decides (binary when there is one) and the attribution model for its fakes, if any.

    No models: the shipped default and the companion its card names. One binary model: its companion too, when
    the card names one that is shipped. Two: one binary and one attribution model, in either order.
    """
    with_companion = companion
    detectors = [open_detector(_by_name_or_path(m, device), device=device) for m in (models or [None])]
    if len(detectors) > 2:
        raise ModelError("give --model at most twice: a binary model and an attribution model")
    binary = [d for d in detectors if d.card.task == "binary"]
    attribution = [d for d in detectors if d.card.task == "attribution"]
    if len(detectors) == 2 and (len(binary) != 1 or len(attribution) != 1):
        raise ModelError("two models must be one binary and one attribution model, "
                         f"not {[d.card.task for d in detectors]}")
    if len(detectors) == 1:
        main = detectors[0]
        companion = main.card.companion if main.card.task == "binary" else ""
        if with_companion and companion and companion in _model_files():
            return main, open_detector(_by_name_or_path(companion, device), device=device)
        return main, None
    return binary[0], attribution[0]
