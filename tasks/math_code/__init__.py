"""`math_code`: GSM-Hard-style word problems, answered by writing a program."""

from benchmark.taskinfo import TaskInfo
from tasks.math_code.data import build_eval

TASK = TaskInfo(
    name="math_code",
    display_name="Word problems via programs",
    description="Word problems whose answers are beyond the base's mental arithmetic (GSM-Hard "
    "style, two-digit numbers on micro), answered by a program (program-of-thought) that is executed "
    "in the sandbox. Needs the math skill (read the story) and the code skill (write the program): "
    "neither expert saw this format.",
    skills=("math", "code"),
    primary_metric="exec_accuracy",
    build_eval=build_eval,
)
