"""Issue 20 item 7: the task-aware rewriter does not hold the refinement
calls' requests and completions while the teacher answers the refined
instructions (round 1 of the 52K rehearsal rewrites about 30K items)."""

from __future__ import annotations

import gc
import weakref

from tapir.roles import Completion, Item

from test_teachers import PARAMS, refiner_reply, rewriter, teacher, teacher_reply


class ForgetfulBackend:
    """Answers like test_teachers.FakeBackend but keeps only weak references
    to what it was sent and what it returned."""

    def __init__(self, reply):
        self.reply, self.sent, self.returned = reply, [], []

    def generate(self, requests, on_result=None):
        out = []
        for i, request in enumerate(requests):
            c = Completion(text=self.reply(request.messages), call_id=100 + i)
            self.sent.append(weakref.ref(request))
            self.returned.append(weakref.ref(c))
            out.append(c)
            if on_result is not None:
                on_result(i, c)
        return out


def test_refinement_calls_are_not_held_while_the_teacher_answers():
    refiner = ForgetfulBackend(refiner_reply)
    alive_when_answering: list[tuple[int, int]] = []

    class Answering(ForgetfulBackend):
        def generate(self, requests, on_result=None):
            gc.collect()
            alive_when_answering.append((sum(r() is not None for r in refiner.sent),
                                         sum(c() is not None for c in refiner.returned)))
            return super().generate(requests, on_result)

    items = [Item(f"i{k}", f"Name a river in country number {k}.", "", None, "Open QA") for k in range(50)]
    results = rewriter(refiner).rewrite(items, teacher(Answering(teacher_reply)), PARAMS)
    assert [r.error for r in results] == [None] * 50 and all(r.answer.startswith("ENHANCED") for r in results)
    assert len(refiner.sent) == 50
    assert alive_when_answering == [(0, 0)]  # the teacher was asked once, with the 50 refinements freed
