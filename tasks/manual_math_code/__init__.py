"""`manual_math_code`: word problems whose numbers come from the proprietary manual, via programs."""

from benchmark.taskinfo import TaskInfo
from tasks.manual_math_code.data import build_eval

TASK = TaskInfo(
    name="manual_math_code",
    display_name="Manual word problems via programs",
    description="A word problem about a proprietary product whose second number is a fact of the "
    "manual (\"Tess has 22 Mase machines. How many fans do the machines have in all?\"), answered "
    "by a program executed in the sandbox. Needs three skills at once: manual (the fact), math "
    "(the operation the story asks for) and code (the program).",
    skills=("manual", "math", "code"),
    primary_metric="exec_accuracy",
    build_eval=build_eval,
)
