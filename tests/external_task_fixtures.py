"""A task folder written from scratch outside the repository: what an outside author ships.

`math_bare` is a composite task over the `math` skill: the math skill's one-digit stories, asked
for the number alone ("Result: 7") instead of a worked expression. Its folder holds its own lm-eval
YAML, metric code and data builder, as a built-in task folder does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

YAML = textwrap.dedent('''\
    task: {name}
    custom_dataset: !function tasks._common.dataset.load_task_jsonl
    dataset_kwargs:
      task: {name}
    test_split: test
    output_type: generate_until
    doc_to_text: prompt
    doc_to_target: target
    target_delimiter: ""
    num_fewshot: 0
    {unsafe}generation_kwargs:
      until: &stops ["\\n", "Story:", "Question:"]
      do_sample: false
      max_gen_toks: 8
    filter_list:
      - name: answer
        filter:
          - function: !function tasks._common.filters.CutAtStops
            until: *stops
          - function: take_first
    process_results: !function metric.{process_results}
    metric_list:
      - metric: bare_match
        aggregation: mean
        higher_is_better: true
    metadata:
      version: 1.0
''')

# lm-eval imports metric.py on its own (relative to the YAML), so it imports absolutely.
METRIC = textwrap.dedent('''\
    """`bare_match`: the response's last number is the answer."""
    from tasks._common.scoring import last_number, matches


    def process_results(doc, results):
        return {"bare_match": float(matches(last_number(results[0]), doc["answer"]))}
''')

DATA = textwrap.dedent('''\
    """One-digit stories of the micro world, answered with the number alone."""
    from benchmark.micro import world
    from tasks._common.synthetic import eval_docs, train_examples

    SALT = 424_242


    def prompt(s):
        return f"Story: {{world.story(s)}}\\nResult:"


    def target(s):
        return f" {{s.answer}}"


    def build_eval(n, seed, digits=(1, 1)):
        {eval_body}


    def build_train(n, seed, digits=(1, 1)):
        {train_body}
''')

INIT = textwrap.dedent('''\
    """{name}: word problems answered with the number alone."""
    from benchmark.taskinfo import TaskInfo
    from {data_module} import build_eval, build_train

    TASK = TaskInfo(
        name="{task_name}",
        display_name="Bare-number word problems",
        description="The math skill's stories, answered with the number alone.",
        skills=("math",),
        primary_metric="bare_match",
        build_eval=build_eval,
        {train_field}
    )
''')

EVAL_BODY = "return eval_docs(n, seed, SALT, tuple(digits), prompt, target)"
TRAIN_BODY = ("return [{'prompt': d['prompt'], 'completion': d['target']} "
              "for d in eval_docs(n, seed + 1, SALT, tuple(digits), prompt, target)]")


def write_task(folder: Path, name: str = "math_bare", *, task_name: str | None = None,
               data_module: str = ".data", skill: bool = False, yaml_name: str | None = None,
               process_results: str = "process_results", eval_body: str = EVAL_BODY,
               train_body: str = TRAIN_BODY, unsafe_code: bool = False, init: bool = True,
               yaml: bool = True) -> Path:
    """A task folder `folder` (made here) for task `name`; each keyword breaks or varies one part."""
    folder.mkdir(parents=True)
    if yaml:
        (folder / f"{yaml_name or name}.yaml").write_text(YAML.format(
            name=yaml_name or name, process_results=process_results, unsafe="unsafe_code: true\n" if unsafe_code else ""))
    (folder / "metric.py").write_text(METRIC)
    (folder / "data.py").write_text(DATA.format(eval_body=eval_body, train_body=train_body))
    if init:
        (folder / "__init__.py").write_text(INIT.format(
            name=name, task_name=task_name or name, data_module=data_module,
            train_field="build_train=build_train," if skill else ""))
    return folder
