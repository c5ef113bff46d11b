"""Compare every model of a run on held-out text, with paired-bootstrap statistics.

Each model (teachers, EKD stages, baselines, method variants: every directory of the run that
holds a finished checkpoint) translates the same sentences greedily; sacrebleu's paired
bootstrap resampling (Koehn 2004) then gives each system's BLEU and chrF with a 95% interval
and a p-value against the reference system, by default the final EKD student.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ekd_edge import markdown
from ekd_edge.defaults import DEFAULT_CORPUS
from ekd_edge.errors import EkdError
from ekd_edge.files import write_json_atomic, write_text_atomic

GROUPS = ("teachers", "students", "baselines", "methods")
EXAMPLES = 8   # test sentences kept with every model's translation in the result


@dataclass
class Row:
    name: str
    role: str
    params: int
    bleu: float
    bleu_ci: float          # half-width of the 95% bootstrap interval around bleu_mean
    bleu_mean: float
    bleu_p: float | None    # None for the reference system itself
    chrf: float
    chrf_ci: float
    chrf_mean: float
    chrf_p: float | None
    decode_s: float


def run_models(run_dir: str | Path) -> list[tuple[str, str, Path]]:
    """(name, role, path) of every finished model under the run's model folders."""
    run_dir = Path(run_dir)
    found = []
    for group in GROUPS:
        folder = run_dir / group
        if not folder.is_dir():
            continue
        for model_dir in sorted(folder.iterdir()):
            if (model_dir / "metrics.json").is_file() and (model_dir / "model.safetensors").is_file():
                role = "teacher" if group == "teachers" else group.rstrip("s")
                found.append((model_dir.name if group != "students" else f"ekd-{model_dir.name}", role, model_dir))
    return found


def default_reference(models: list[tuple[str, str, Path]]) -> str:
    """The last EKD stage, else the first non-teacher."""
    stages = [name for name, role, _ in models if role == "student"]
    if stages:
        return sorted(stages, key=lambda n: int(n.rsplit("-", 1)[1]))[-1]
    others = [name for name, role, _ in models if role != "teacher"]
    if not others:
        raise EkdError("compare: the run holds no student to compare against; train one first")
    return others[0]


def paired_bootstrap(systems: dict[str, list[str]], references: list[str], reference_system: str,
                     samples: int = 1000) -> dict[str, dict]:
    """BLEU and chrF with 95% intervals and p-values of every system against ``reference_system``."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    names = [reference_system] + [n for n in systems if n != reference_system]
    test = PairedTest([(n, systems[n]) for n in names], {"BLEU": BLEU(), "chrF": CHRF()}, [references],
                      test_type="bs", n_samples=samples)
    _, scores = test()
    out = {}
    for i, name in enumerate(scores["System"]):
        entry = {}
        for metric, key in (("BLEU", "bleu"), ("chrF", "chrf")):
            # sacrebleu names the columns by the metric's own name ("chrF2" for chrF with β = 2)
            column = next(c for c in scores if c != "System" and c.lower().startswith(metric.lower()))
            result = scores[column][i]
            entry[key] = float(result.score)
            entry[f"{key}_mean"] = float(result.mean) if result.mean is not None else float(result.score)
            entry[f"{key}_ci"] = float(result.ci) if result.ci is not None else 0.0
            entry[f"{key}_p"] = None if i == 0 else float(result.p_value)
        out[name] = entry
    return out


def compare_run(run_dir: str | Path, split: str = "test", sentences: int = 0, samples: int = 1000,
                reference: str = "", max_new_tokens: int = 96) -> dict:
    """Translate, score and test every model of the run; write compare/<split>.json and .md."""
    import tomllib

    from ekd_edge.console import console
    from ekd_edge.data.corpus import load_corpus
    from ekd_edge.data.tokenizer import load_tokenizer
    from ekd_edge.models import count_parameters, load_model
    from ekd_edge.runtime.torch_engine import TorchTranslator

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.toml").is_file():
        raise EkdError(f"{run_dir}: not an ekd-edge run directory (no recipe.toml)")
    models = run_models(run_dir)
    if not models:
        raise EkdError(f"{run_dir}: no finished models to compare")
    data = tomllib.loads((run_dir / "recipe.toml").read_text()).get("data", {})
    corpus = load_corpus(data.get("corpus", DEFAULT_CORPUS), data.get("src_lang") or None,
                         data.get("tgt_lang") or None)
    text = corpus.split(split).head(sentences or None)
    reference = reference or default_reference(models)
    if reference not in [m[0] for m in models]:
        raise EkdError(f"compare: no model named {reference!r} in {run_dir} ({', '.join(m[0] for m in models)})")
    hyps, info = {}, {}
    for name, role, path in models:
        start = time.perf_counter()
        model = load_model(path)
        hyps[name] = TorchTranslator.from_model(model, load_tokenizer(path), path).translate(
            text.src, max_new_tokens=max_new_tokens)
        info[name] = (role, count_parameters(model), round(time.perf_counter() - start, 2))
        console.log(f"compare: translated {len(text)} {split} sentences with {name}")
    stats = paired_bootstrap(hyps, text.tgt, reference, samples)
    rows = [Row(name=n, role=info[n][0], params=info[n][1], decode_s=info[n][2], **stats[n]) for n, _, _ in models]
    result = {"run": str(run_dir), "split": split, "sentences": len(text), "bootstrap_samples": samples,
              "reference_system": reference, "rows": [asdict(r) for r in rows],
              # the first sentences as every model translated them: examples quoted from here are real output
              "examples": [{"src": text.src[i], "ref": text.tgt[i], "hyps": {n: hyps[n][i] for n in hyps}}
                           for i in range(min(EXAMPLES, len(text)))]}
    out = run_dir / "compare"
    out.mkdir(exist_ok=True)
    write_json_atomic(out / f"{split}.json", result)
    write_text_atomic(out / f"{split}.md", markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    rows = [[r["name"], r["role"], r["params"], r["bleu"], markdown.mean_sd(r["bleu_mean"], r["bleu_ci"]),
             markdown.p_value(r["bleu_p"]), r["chrf"], markdown.mean_sd(r["chrf_mean"], r["chrf_ci"]),
             markdown.p_value(r["chrf_p"])] for r in result["rows"]]
    return (f"{result['split']} split, {result['sentences']} sentences, paired bootstrap "
            f"({result['bootstrap_samples']} resamples) against {result['reference_system']}\n\n"
            + markdown.table(["model", "role", "params", "BLEU", "95% CI", "p", "chrF", "95% CI", "p"], rows,
                             align="llrrrrrrr", formats={2: markdown.count}))


def rich_table(result: dict):
    from rich.table import Table

    table = Table(title=f"{result['run']}: {result['split']} ({result['sentences']} sentences), "
                        f"p against {result['reference_system']}")
    for col in ("model", "role", "params", "BLEU", "95% CI", "p", "chrF", "95% CI", "p"):
        table.add_column(col, justify="left" if col in ("model", "role") else "right")
    for r in result["rows"]:
        table.add_row(r["name"], r["role"], f"{r['params']:,}", f"{r['bleu']:.2f}", f"± {r['bleu_ci']:.2f}",
                      markdown.p_value(r["bleu_p"]), f"{r['chrf']:.2f}", f"± {r['chrf_ci']:.2f}",
                      markdown.p_value(r["chrf_p"]))
    return table
