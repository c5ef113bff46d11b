"""Export profiles: a deployment target as a small TOML file (``ekd_edge/profiles/<name>.toml``,
shipped with the package; a ``./export/<name>.toml`` of your own takes precedence).

A profile combines the export choices: format (onnx, ct2, onefile, web), int8 quantisation and its
options, structured pruning with a recovery fine-tune, the mobile .ort conversion, and the gates.
``run_export`` carries a profile out: prune (optional) → export → gates → bundle with manifest.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ekd_edge.config import build
from ekd_edge.defaults import (DEFAULT_CORPUS, MAX_BLEU_DROP, PARITY_SENTENCES, PARITY_THRESHOLD,
                               QUALITY_SENTENCES)
from ekd_edge.errors import ProfileError
from ekd_edge.export.destination import check_destination
from ekd_edge.files import staged
from ekd_edge.export.prune import PruneSettings

FORMATS = ("onnx", "ct2", "onefile", "web")
# Your own profiles in ./export/ first, then the ones shipped as package data (work from a wheel too).
PACKAGED_PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def profile_dirs() -> tuple[Path, Path]:
    return (Path.cwd() / "export", PACKAGED_PROFILES)


@dataclass
class QuantizeSettings:
    mode: str = "none"                 # "int8" or "none"
    arch: str = "host"                 # avx2, avx512_vnni, arm64 or host (ONNX); ct2 picks its kernels at run time
    per_channel: bool = True           # per-channel weight scales (else one scale per tensor)
    keep_fp32: list = field(default_factory=list)  # ONNX node-name substrings left unquantised
    portable: bool = False             # same tokens on x86 and ARM, at a speed cost (export/portable.py)
    kernel: str = "dynamic"            # one-file int8: dynamic, blockwise, weight-only or host (INT8_KERNELS)


@dataclass
class GateSettings:
    split: str = "valid"               # gates use validation data; test stays for reporting
    parity_sentences: int = PARITY_SENTENCES     # 0 = no parity check
    parity_threshold: float = PARITY_THRESHOLD
    quality_sentences: int = QUALITY_SENTENCES   # 0 = no quality gate
    max_bleu_drop: float = MAX_BLEU_DROP


OUTPUT_VOCABULARIES = ("full", "training-targets")


@dataclass
class OnefileSettings:
    # "training-targets": the decoder may produce only the pieces of the corpus's training targets
    # (export/onefile.py, output_ids), so each step multiplies fewer rows of the output projection
    output_vocabulary: str = "full"


@dataclass
class MobileSettings:
    target_platform: str = ""          # "arm" or "amd64" adds .ort graphs; "" = none


@dataclass
class Profile:
    name: str
    description: str = ""
    format: str = "onnx"
    corpus: str = DEFAULT_CORPUS       # where gate (and pruning importance/recovery) data come from
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    mobile: MobileSettings = field(default_factory=MobileSettings)
    onefile: OnefileSettings = field(default_factory=OnefileSettings)
    prune: PruneSettings | None = None
    source: str = ""

    def check(self) -> None:
        where = self.source or f"profile {self.name}"
        if self.format not in FORMATS:
            raise ProfileError(f"{where}: format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.quantize.mode not in ("int8", "none"):
            raise ProfileError(f"{where}: quantize.mode must be \"int8\" or \"none\" (got {self.quantize.mode!r})")
        from ekd_edge.export.onnx_export import INT8_KERNELS, QUANT_ARCHS, host_int8_kernel
        from ekd_edge.host import int8_arch

        # "host" is settled here, once, so the manifest records the target actually built
        if self.quantize.arch == "host":
            self.quantize.arch = int8_arch()
        if self.quantize.kernel == "host":
            self.quantize.kernel = host_int8_kernel(self.quantize.arch)
        if self.quantize.arch not in QUANT_ARCHS:
            raise ProfileError(f"{where}: quantize.arch {self.quantize.arch!r} is not one of {', '.join(QUANT_ARCHS)}")
        if self.quantize.kernel not in INT8_KERNELS:
            raise ProfileError(f"{where}: quantize.kernel {self.quantize.kernel!r} is not one of {', '.join(INT8_KERNELS)}")
        if self.quantize.kernel != "dynamic" and self.format != "onefile":
            raise ProfileError(f"{where}: quantize.kernel {self.quantize.kernel!r} applies to format onefile only")
        if self.quantize.kernel != "dynamic" and self.quantize.portable:
            raise ProfileError(f"{where}: portable numerics need quantize.kernel = \"dynamic\"")
        if self.gate.max_bleu_drop < 0 or self.gate.parity_sentences < 0 or self.gate.quality_sentences < 0:
            raise ProfileError(f"{where}: gate values must be >= 0 (max_bleu_drop, parity_sentences, quality_sentences)")
        if self.gate.split not in ("valid", "test"):
            raise ProfileError(f"{where}: gate.split must be valid or test")
        if self.mobile.target_platform not in ("", "arm", "amd64"):
            raise ProfileError(f"{where}: mobile.target_platform must be arm or amd64")
        if self.quantize.portable and self.format in ("ct2", "web"):
            raise ProfileError(f"{where}: quantize.portable applies to the ONNX formats (onnx, onefile) only")
        if self.onefile.output_vocabulary not in OUTPUT_VOCABULARIES:
            raise ProfileError(f"{where}: onefile.output_vocabulary {self.onefile.output_vocabulary!r} is not one of "
                               f"{', '.join(OUTPUT_VOCABULARIES)}")
        if self.onefile.output_vocabulary != "full" and self.format != "onefile":
            raise ProfileError(f"{where}: onefile.output_vocabulary applies to format onefile only")
        if self.mobile.target_platform and self.format != "onnx":
            raise ProfileError(f"{where}: the mobile .ort conversion applies to format onnx only")
        if self.prune is not None:
            self.prune.check(f"{where} [prune]")


def parse_profile(data: dict, source: str) -> Profile:
    data = dict(data)
    tables = {"quantize": QuantizeSettings, "gate": GateSettings, "mobile": MobileSettings,
              "onefile": OnefileSettings, "prune": PruneSettings}
    parts = {key: build(cls, data.pop(key), f"{source} [{key}]", ProfileError) for key, cls in tables.items() if key in data}
    scalars = {k: v for k, v in data.items()}
    if "name" not in scalars:
        scalars["name"] = Path(source).stem
    unknown = sorted(set(scalars) - {"name", "description", "format", "corpus"})
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {', '.join(unknown)} "
                           "(allowed: name, description, format, corpus, [quantize], [gate], [mobile], [onefile], [prune])")
    for key, value in scalars.items():
        if not isinstance(value, str):
            raise ProfileError(f"{source}: {key} must be a string (got {value!r})")
    profile = Profile(**scalars, **parts, source=source)
    profile.check()
    return profile


def find_profile(name_or_path: str | Path) -> Path:
    """A profile file: a path to a .toml, or the name of one in export/ (working directory, then the repository)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ProfileError(f"{path}: profile file not found")
        return path
    for directory in profile_dirs():
        candidate = directory / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ProfileError(f"export profile {name_or_path!r} not found in ./export/ or the packaged profiles "
                      f"(known: {', '.join(known) or 'none'})")


def load_profile(name_or_path: str | Path) -> Profile:
    path = find_profile(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML ({exc})") from None
    return parse_profile(data, str(path))


def run_export(checkpoint_dir: str | Path, out_dir: str | Path, profile: Profile, force: bool = False,
               progress=None) -> dict:
    """Carry out ``profile`` on ``checkpoint_dir``: returns the written bundle's manifest."""
    from ekd_edge.data.corpus import load_corpus

    report = progress or (lambda message: None)
    profile.check()
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    corpus = load_corpus(profile.corpus)
    gate_data = corpus.split(profile.gate.split)
    parity_texts = gate_data.head(profile.gate.parity_sentences).src if profile.gate.parity_sentences else None
    quality = gate_data.head(profile.gate.quality_sentences) if profile.gate.quality_sentences else None
    quality_data = (quality.src, quality.tgt) if quality is not None else None
    quantized = profile.quantize.mode == "int8"

    check_destination(out_dir)  # before minutes of pruning, not after
    with staged(out_dir.parent / f"{out_dir.name}.prune") as work:
        source, pruning = checkpoint_dir, None
        if profile.prune is not None:
            from ekd_edge.export.prune import prune_checkpoint

            source = work / "pruned"
            train = corpus.split("train") if profile.prune.recovery_steps else None
            pruning = prune_checkpoint(checkpoint_dir, source, profile.prune, corpus.split("valid"), train,
                                       progress=report)
        if profile.format == "onnx":
            from ekd_edge.export.onnx_export import export_bundle

            manifest = export_bundle(
                source, out_dir, quantize="int8" if quantized else None, quant_arch=profile.quantize.arch,
                per_channel=profile.quantize.per_channel, keep_fp32=tuple(profile.quantize.keep_fp32),
                parity_texts=parity_texts, parity_threshold=profile.gate.parity_threshold,
                quality_data=quality_data, max_bleu_drop=profile.gate.max_bleu_drop,
                quality_reference=checkpoint_dir, mobile=profile.mobile.target_platform or None,
                portable=profile.quantize.portable, force=force, progress=report)
        elif profile.format == "web":
            from ekd_edge.export.web import export_web

            manifest = export_web(source, out_dir, quantize="int8" if quantized else None,
                                  quant_arch=profile.quantize.arch, per_channel=profile.quantize.per_channel,
                                  keep_fp32=tuple(profile.quantize.keep_fp32), parity_texts=parity_texts,
                                  parity_threshold=profile.gate.parity_threshold, quality_data=quality_data,
                                  max_bleu_drop=profile.gate.max_bleu_drop, quality_reference=checkpoint_dir,
                                  force=force, progress=report)
        elif profile.format == "ct2":
            from ekd_edge.export.ct2 import export_ct2_bundle

            manifest = export_ct2_bundle(source, out_dir, quantization="int8" if quantized else "float32",
                                         parity_texts=parity_texts, parity_threshold=profile.gate.parity_threshold,
                                         quality_data=quality_data, max_bleu_drop=profile.gate.max_bleu_drop,
                                         quality_reference=checkpoint_dir, force=force, progress=report)
        else:
            from ekd_edge.export.onefile import export_onefile

            output_ids = None
            if profile.onefile.output_vocabulary == "training-targets":
                from ekd_edge.data.tokenizer import target_side_ids

                report(f"output vocabulary: the pieces of {profile.corpus}'s training targets")
                output_ids = target_side_ids(source, corpus.split("train").tgt)
            manifest = export_onefile(source, out_dir, quantize="int8" if quantized else None,
                                      quant_arch=profile.quantize.arch, int8_kernel=profile.quantize.kernel,
                                      parity_texts=parity_texts,
                                      parity_threshold=profile.gate.parity_threshold,
                                      quality_data=quality_data, max_bleu_drop=profile.gate.max_bleu_drop,
                                      quality_reference=checkpoint_dir,
                                      portable=profile.quantize.portable, output_ids=output_ids, force=force,
                                      progress=report)
    return _record_profile(out_dir, manifest, profile, pruning)


def _record_profile(out_dir: Path, manifest: dict, profile: Profile, pruning: dict | None) -> dict:
    """Add the profile (and the pruning report) to the bundle's manifest; the file list is unchanged."""
    from ekd_edge.export.manifest import write_manifest

    manifest["profile"] = {k: v for k, v in asdict(profile).items() if k != "source"}
    manifest["profile"]["file"] = profile.source
    if pruning is not None:
        manifest["pruning"] = pruning
    write_manifest(out_dir, manifest)
    return manifest


def profile_from_args(args) -> Profile:
    """The profile an `ekd-edge export` command line asks for: --profile (or the defaults), then the
    options given explicitly on the command line on top."""
    profile = load_profile(args.profile) if args.profile else Profile(name="command-line")
    if args.format:
        profile.format = args.format
    if args.quantize:
        profile.quantize.mode = args.quantize
    if args.arch:
        profile.quantize.arch = args.arch
    if getattr(args, "int8_kernel", None):
        profile.quantize.kernel = args.int8_kernel
    if args.per_channel is not None:
        profile.quantize.per_channel = args.per_channel
    if args.keep_fp32:
        profile.quantize.keep_fp32 = list(args.keep_fp32)
    if getattr(args, "portable_numerics", None) is not None:
        profile.quantize.portable = args.portable_numerics
    if args.mobile:
        profile.mobile.target_platform = args.mobile
    if getattr(args, "output_vocabulary", None):
        profile.onefile.output_vocabulary = args.output_vocabulary
    if args.prune and profile.prune is None:
        profile.prune = PruneSettings(ffn_keep=0.5, decoder_layers=1, recovery_steps=300)
    # Options left out (None) keep the profile's value; given ones override it, even when they
    # equal the built-in default.
    if args.corpus is not None:
        profile.corpus = args.corpus
    if args.parity_split is not None:
        profile.gate.split = args.parity_split
    if args.parity_sentences is not None:
        profile.gate.parity_sentences = args.parity_sentences
    if args.parity_threshold is not None:
        profile.gate.parity_threshold = args.parity_threshold
    if args.quality_sentences is not None:
        profile.gate.quality_sentences = args.quality_sentences
    if args.max_bleu_drop is not None:
        profile.gate.max_bleu_drop = args.max_bleu_drop
    profile.check()
    return profile
