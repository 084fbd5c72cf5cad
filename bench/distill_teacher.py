"""Does distillation's edge over RL-only depend on how strong the teacher is? (R1 sec. 4.1, Table 6)

    python bench/distill_teacher.py [--recipe configs/tiny.yaml] [--teacher student_rl:llama_m]

The paper distils a 671B teacher into students of 1.5B-70B: the teacher is far above anything RL
finds in a student. The tiny R1 is not (pass@1 ~0.45, +0.06 over its base). This benchmark runs the
recipe's pipeline (every stage cached after `make run`) and then stage 9 again with a stronger
checkpoint of the same run writing the traces (`distill.teacher_from`; default the RL-only llama_m),
for every student that pretrained weaker than both teachers. The RL-only students are the same
artifacts in both runs. Per teacher and student: distilled pass@1, RL-only pass@1, their paired
difference with its 95% bootstrap interval, and the gain ratio strong teacher / R1 teacher.
Writes bench/results/distill_teacher_<device>.json. Never part of the tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import OUT, device_name

from r1flow.models.eval import report
from r1flow.recipe import load_recipe
from r1flow.tasks.report import load_evaluation


def _evals(paths: dict[str, str], labels: list[str]) -> dict[str, dict]:
    return {lb: load_evaluation(paths[f"evaluate:{lb}"]) for lb in labels}


def _label(recipe, key: str) -> tuple[str, str | None]:
    """A run key's evaluation label, and the student it belongs to (None for the R1 path)."""
    from r1flow.stages import checkpoints

    labels = {node: label for label, node in checkpoints(recipe).items()}
    return labels[key], key.partition(":")[2] or None


def _pass1(ev: dict, label: str) -> float:
    return report._row(ev, label)["pass@1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="configs/tiny.yaml")
    ap.add_argument("--teacher", default="student_rl:llama_m",
                    help="Run key of the checkpoint that writes the second set of traces.")
    args = ap.parse_args()
    recipe = load_recipe(args.recipe)
    from r1flow.flows.pipeline import pipeline

    paths = pipeline(recipe=recipe)
    if args.teacher not in paths:
        raise SystemExit(f"--teacher {args.teacher!r}: not a checkpoint of this run; run keys: {', '.join(paths)}")
    teacher_label, teacher_student = _label(recipe, args.teacher)
    base = _evals(paths, ["r1", teacher_label] + [s.name for s in recipe.distill.students])
    strong_p1 = _pass1(base, teacher_label)
    students = [s for s in recipe.distill.students
                if s.name != teacher_student and _pass1(base, s.name) < min(_pass1(base, "r1"), strong_p1)]
    if not students:
        raise SystemExit("no student pretrained weaker than both teachers")
    strong = recipe.model_copy(update={
        "name": f"{recipe.name}-teacher-{teacher_label}",
        "distill": recipe.distill.model_copy(update={"teacher_from": str(Path(paths[args.teacher]).resolve()),
                                                     "students": students})})
    strong_paths = pipeline(recipe=strong, from_stage="student_pretrain")
    rows = []
    for s in students:
        row = {"student": s.name, "pretrained_pass@1": _pass1(base, s.name)}
        for tag, p, t in (("r1", paths, "r1"), ("strong", strong_paths, "teacher")):
            ev = _evals(p, [t, f"{s.name}_distill", f"{s.name}_rl"])
            d, lo, hi = report.paired(ev, f"{s.name}_distill", f"{s.name}_rl")
            row |= {f"{tag}_teacher_pass@1": _pass1(ev, t), f"{tag}_distill_pass@1": _pass1(ev, f"{s.name}_distill"),
                    "rl_only_pass@1": _pass1(ev, f"{s.name}_rl"), f"{tag}_distill_minus_rl": d,
                    f"{tag}_ci95": [lo, hi], f"{tag}_holds": lo > 0}
        row["gain_ratio_strong_vs_r1"] = (row["strong_distill_minus_rl"] / row["r1_distill_minus_rl"]
                                          if row["r1_distill_minus_rl"] else None)
        rows.append(row)
    result = {"benchmark": "distill_teacher", "recipe": recipe.name, "device": device_name(),
              "strong_teacher": args.teacher, "rows": rows,
              "rule": "claim 4 holds for a student when the 95% interval of distilled minus RL-only is above 0"}
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"distill_teacher_{device_name()}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{'student':<10} {'teacher':<14} {'teacher p@1':>11} {'distill':>8} {'RL-only':>8}  distill - RL [95% CI]")
    for r in rows:
        for tag, name in (("r1", "r1"), ("strong", teacher_label)):
            lo, hi = r[f"{tag}_ci95"]
            print(f"{r['student']:<10} {name:<14} {r[f'{tag}_teacher_pass@1']:>11.3f} "
                  f"{r[f'{tag}_distill_pass@1']:>8.3f} {r['rl_only_pass@1']:>8.3f}  "
                  f"{r[f'{tag}_distill_minus_rl']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
