"""Print chapter 5's table: do data-independent templates stand for the exact rows?

For LeNet-5 and the deep chain, trained on centred and on varied digits with seeds 0 and 1
(``kronlib.zoo.trained``; trained and cached on first use, about two and a half minutes cold on
two cores), prints the test accuracy, how often the templates alone pick the network's class, and
the mean cosine between each template and the class mean of the exact rows
(``kronlib.templates.study_templates``) — the numbers chapter 5 glues into its prose.

Usage: ``.venv/bin/python tools/template_table.py``
"""

from __future__ import annotations

from kronlib.templates import study_templates
from kronlib.zoo import trained

NAMES = ("lenet5", "lenet5-varied", "deep", "deep-varied")


def main() -> None:
    """Print one line per network and seed."""
    print(f"{'seed':>4} {'network':<14} {'accuracy':>9} {'agreement':>10} {'cosine':>7}")
    for seed in (0, 1):
        for name in NAMES:
            run = trained(name, seed=seed, verbose=False)
            study = study_templates(run.model, run.test_data)
            print(
                f"{seed:>4} {name:<14} {study.accuracy:>9.1%} {study.agreement:>10.1%} "
                f"{study.mean_cosine:>7.2f}"
            )


if __name__ == "__main__":
    main()
