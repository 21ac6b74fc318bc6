"""Studies: compress one FP32 model several ways, then evaluate and profile every variant side by side and pick
one under an accuracy budget.

- `plan`: the typed study (`StudyPlan`, `Candidate`, `SelectionConfig`) and chain checks;
- `recipe`: the YAML form (`StudyRecipe`, `load_study_recipe`), checked with line numbers;
- `auto`: an `auto` candidate expanded into `optimize -t auto`'s chains for this CPU, and the report's `auto`
  section (which of them `-t auto` would pick);
- `stages`: build -> evaluate -> profile, each recording a candidate's failure and going on;
- `run`: `run_plan`, `compare` (keywords, for scripts), `run_study` (a recipe, cached, replayable) and
  `run_studies` (several recipes, one progress view);
- `executors`: where the units of work run (local, the default, or ray).
"""

from __future__ import annotations

from modelpress.study.plan import Candidate, SelectionConfig, StudyPlan, check_chain, default_metric, full_chain
from modelpress.study.recipe import StudyRecipe, load_study_recipe
from modelpress.study.run import compare, require_completed, run_plan, run_studies, run_study

__all__ = ["Candidate", "SelectionConfig", "StudyPlan", "StudyRecipe", "check_chain", "compare", "default_metric",
           "full_chain", "load_study_recipe", "require_completed", "run_plan", "run_studies", "run_study"]
