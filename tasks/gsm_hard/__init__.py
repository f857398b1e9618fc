"""`gsm_hard`: GSM-Hard (Gao et al. 2023, PAL), word problems with large numbers, answered by a program."""

from benchmark.taskinfo import TaskInfo
from tasks.gsm_hard.data import build_eval

TASK = TaskInfo(
    name="gsm_hard",
    display_name="GSM-Hard via programs",
    description="GSM8K's test problems with their numbers replaced by large ones (GSM-Hard, 1,319 problems), "
    "answered few-shot by a Python `solution()` function that is executed in the sandbox; right when what it "
    "returns is within 1e-3 of the answer. LoRA Soups' math-with-code task: reading the problem (math) and "
    "writing the program (code).",
    skills=("math", "code"),
    primary_metric="exec_accuracy",
    build_eval=build_eval,
)
