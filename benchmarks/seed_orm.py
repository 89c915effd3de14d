# ruff: noqa  -- a verbatim copy of the seed: its style is the point, not ours
"""The seed's accuracy reward, kept verbatim as the reference mmr1 must equal.

Source: the seed, ms-swift's docs/source_en/BestPractices/GRPO-Multi-Modal-Training.md ("Reward Function
Definition"), i.e. ms-swift's
`examples/train/grpo/plugin/plugin.py`. Only the two names it takes from ms-swift (`ORM`, `orms`)
are stubbed here; the class body below is the seed's code, unchanged. Do not edit it.
"""

import re
from typing import List


class ORM:  # stub of swift.plugin.ORM: the seed's class only inherits the name
    pass


orms = {}  # stub of swift.plugin.orms, the seed's registry


# ---- verbatim from the seed ---------------------------------------------------------------------
class MultiModalAccuracyORM(ORM):

    def __call__(self, completions, solution, **kwargs) -> List[float]:
        """
        Reward function that checks if the completion is correct.
        Args:
            completions (list[str]): Generated outputs
            solution (list[str]): Ground Truths.

        Returns:
            list[float]: Reward scores
        """
        rewards = []
        from math_verify import parse, verify
        for content, sol in zip(completions, solution):
            reward = 0.0
            # Try symbolic verification first
            try:
                answer = parse(content)
                if float(verify(answer, parse(sol))) > 0:
                    reward = 1.0
            except Exception:
                pass  # Continue to next verification method if this fails

            # If symbolic verification failed, try string matching
            if reward == 0.0:
                try:
                    # Extract answer from solution if it has think/answer tags
                    sol_match = re.search(r'<answer>(.*?)</answer>', sol)
                    ground_truth = sol_match.group(1).strip() if sol_match else sol.strip()

                    # Extract answer from content if it has think/answer tags
                    content_match = re.search(r'<answer>(.*?)</answer>', content)
                    student_answer = content_match.group(1).strip() if content_match else content.strip()

                    # Compare the extracted answers
                    if student_answer == ground_truth:
                        reward = 1.0
                except Exception:
                    pass  # Keep reward as 0.0 if both methods fail
            rewards.append(reward)
        return rewards
orms['external_r1v_acc'] = MultiModalAccuracyORM
# ---- end of the seed's code ---------------------------------------------------------------------
