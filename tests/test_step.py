"""The scheduling step shared by the router and the simulator: admission, shedding, the
decision and the pop, and that both callers really run it."""
import numpy as np

from superserve.scheduling import EdfQueue, Request, make_policy
from superserve.scheduling.step import ADMITTED, REJECTED, SHED, SchedulingStep, StepOutput
from superserve.sim import IN_TIME, SHED as SIM_SHED, simulate
from superserve.sim.result import REJECTED as SIM_REJECTED


def test_schedule_sheds_decides_and_pops_earliest_first(tiny_profile):
    p = tiny_profile
    step = SchedulingStep(make_policy("maxacc", p))
    q = EdfQueue()
    for i, dl in enumerate([0.100, 0.002, 0.050]):
        assert step.arrive(q, Request(i, 0.0, dl), 0.0, 1) == ADMITTED
    out = step.schedule(q, 0.0)
    assert isinstance(out, StepOutput)
    assert [r.id for r in out.shed] == [1]  # 2 ms left < the fastest option's 3 ms
    assert out.queue_len == 2 and [r.id for r in out.batch] == [2, 0]
    assert out.decision.batch_size == 2 and len(q) == 0


def test_arrival_admission_refuses_only_the_hopeless_last_in_edf_order(tiny_profile):
    p = tiny_profile
    step = SchedulingStep(make_policy("slackfit", p))
    q = EdfQueue()
    for i in range(40):
        assert step.arrive(q, Request(i, 0.0, 1.0), 0.0, 1) == ADMITTED
    # 40 ahead at peak rate (4 per 6 ms) need >= 60 ms: a 20-ms deadline behind them is hopeless.
    assert step.arrive(q, Request(100, 0.0, 1.5), 0.0, 1) == ADMITTED  # later deadline, time enough
    assert step.arrive(q, Request(101, 0.0, 0.020), 0.0, 1) == ADMITTED  # EDF serves it first: kept
    late = Request(102, 0.0, 1.5)  # queues last ...
    assert step.arrive(q, late, 1.49, 1) == SHED  # ... with 10 ms left behind 42 others
    assert step.wait_bound_s(42, 2) < step.wait_bound_s(42, 1)  # more workers, shorter bound


def test_queue_bound_rejects_and_requeue_keeps_only_what_can_still_finish(tiny_profile):
    p = tiny_profile
    step = SchedulingStep(make_policy("slackfit", p))
    q = EdfQueue(capacity=2)
    assert step.arrive(q, Request(0, 0.0, 1.0), 0.0, 1) == ADMITTED
    assert step.arrive(q, Request(1, 0.0, 1.0), 0.0, 1) == ADMITTED
    assert step.arrive(q, Request(2, 0.0, 0.5), 0.0, 1) == REJECTED
    batch = q.pop_earliest(2)
    lost = step.requeue(q, batch + [Request(3, 0.0, 0.001)], now=0.0, workers=1)
    assert [r.id for r in lost] == [3] and len(q) == 2
    assert [r.id for r in step.requeue(EdfQueue(), batch, 0.0, workers=0)] == [0, 1]


def test_set_policy_changes_admission_and_min_service(tiny_profile):
    p = tiny_profile
    step = SchedulingStep(make_policy("slackfit", p))
    fast = step.min_service_s
    step.set_policy(make_policy("slackfit", p.scaled(2.0)))
    assert step.min_service_s == 2 * fast and step.peak_rate_s < SchedulingStep(make_policy("slackfit", p)).peak_rate_s


def test_simulator_models_arrival_admission_and_the_queue_bound(tiny_profile):
    p = tiny_profile
    arrivals = np.zeros(200)  # 200 at once, 30-ms budget: most cannot be served
    r = simulate(arrivals, p, make_policy("slackfit", p), slo_ms=30, queue_capacity=50)
    shed = r.outcome == SIM_SHED
    # The hopeless are refused at arrival (answered at once), before they could fill the queue.
    assert (r.finish[shed] == 0.0).sum() > 150 and r.count(SIM_REJECTED) == 0
    assert r.count(IN_TIME) + r.count(SIM_SHED) == 200
    # Without admission they queue: the bound rejects the overflow, the rest is shed later.
    r2 = simulate(arrivals, p, make_policy("slackfit", p), slo_ms=30, queue_capacity=50, admission=False)
    assert r2.count(SIM_REJECTED) == 149  # one dispatched at once, 50 queued
    assert r2.count(IN_TIME) == r.count(IN_TIME)


def test_router_and_simulator_run_the_same_step_class(tiny_profile):
    from superserve.serving.metrics import ServingMetrics
    from superserve.serving.model_info import ModelInfo
    from superserve.serving.router import Router

    p = tiny_profile
    router = Router(ModelInfo("m", (1, 28, 28), 10, p, None), make_policy("slackfit", p),
                    ServingMetrics({s.id: s.accuracy for s in p.subnets}, 4), queue_capacity=8)
    assert isinstance(router.step, SchedulingStep) and router.policy is router.step.policy
    import inspect

    import superserve.sim.simulator as sim
    assert "SchedulingStep(" in inspect.getsource(sim.simulate)
