"""The energy meter: RAPL counters when readable (wrap-around included), else the labelled CPU estimate."""

import pytest

from loraops.training.energy import CPU_WATTS_PER_CORE, ESTIMATE_METHOD, EnergyMeter, RaplCounters


def _zone(root, name, energy, span):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{span}\n")
    return zone


def _busy(seconds=0.05):
    import time
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_rapl_sums_packages_and_handles_wrap_around(tmp_path):
    first = _zone(tmp_path, "intel-rapl:0", 900_000_000, 1_000_000_000)
    _zone(tmp_path, "intel-rapl:1", 5_000_000, 1_000_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 1, 1_000_000_000)  # a sub-zone: part of package 0, never added twice
    rapl = RaplCounters(tmp_path)
    assert [z.name for z in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = rapl.read()
    (first / "energy_uj").write_text("100000000\n")  # wrapped: 0.9e9 -> 1e9 -> 0.1e9 is 200 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("7000000\n")  # +2 J
    assert rapl.joules_between(before, rapl.read()) == pytest.approx(202.0)


def test_meter_uses_rapl_when_readable(tmp_path):
    zone = _zone(tmp_path, "intel-rapl:0", 1_000_000, 2**32)
    with EnergyMeter(rapl_root=tmp_path) as meter:
        _busy()
        (zone / "energy_uj").write_text("4000000\n")
    assert meter.reading.energy_method == "rapl" and meter.reading.energy_joules == pytest.approx(3.0)
    assert meter.reading.cpu_seconds > 0


def test_unreadable_rapl_falls_back_to_the_labelled_estimate(tmp_path):
    zone = _zone(tmp_path, "intel-rapl:0", 1_000_000, 2**32)
    (zone / "energy_uj").write_text("not a number")  # as good as unreadable (permission denied reads alike)
    with EnergyMeter(rapl_root=tmp_path) as meter:
        _busy()
    reading = meter.reading
    assert reading.energy_method == ESTIMATE_METHOD == f"estimate: {CPU_WATTS_PER_CORE:g} W per busy core"
    assert reading.energy_joules == pytest.approx(reading.cpu_seconds * CPU_WATTS_PER_CORE)
    assert reading.cpu_seconds >= 0.04 and reading.wall_seconds > 0 and reading.gpu_seconds is None


def _record(cls, method, joules, **extra):
    return cls(method=method, train_loss=1.0, val_loss=1.0, steps=2, planned_steps=2, stopped_early=False,
               resumed_from_step=0, trainable_params=10, total_params=100, trainable_share=0.1, learning_rate=1e-4,
               train_seconds=3.0, peak_memory_mb=1.0, memory_before_train_mb=1.0, device="cpu", torch_threads=1,
               cpu_seconds=joules / CPU_WATTS_PER_CORE, energy_joules=joules, energy_method=ESTIMATE_METHOD, **extra)


def test_report_says_what_share_of_the_full_fine_tunes_energy_the_adapter_cost(tmp_path):
    from loraops.core import Layout
    from loraops.evaluation.report import energy_line, training_facts
    from loraops.training import BaselineRecord, TrainRecord

    layout = Layout(tmp_path)
    _record(TrainRecord, "qlora", 250.0).write(layout.train_metrics)
    assert energy_line(training_facts(layout)) is None  # no full fine-tune on record: nothing to compare
    _record(BaselineRecord, "full", 1000.0).write(layout.baseline_metrics)
    line = energy_line(training_facts(layout))
    assert "the adapter cost 25 % of the full fine-tune's energy" in line and ESTIMATE_METHOD in line


def test_report_says_what_the_search_cost_when_the_choice_records_it(tmp_path):
    from loraops.config import LoraParams
    from loraops.core import Layout
    from loraops.evaluation.report import energy_line, training_facts
    from loraops.training import BaselineRecord, TrainChoice, TrainRecord

    layout = Layout(tmp_path)
    choice = TrainChoice(source="search", lora=LoraParams(), learning_rate=1e-4)
    choice.write(layout.search_choice)
    assert energy_line(training_facts(layout)) is None  # a choice without a recorded cost: nothing to say
    choice.model_copy(update={"costed_trials": 3, "total_energy_joules": 4500.0,
                              "energy_method": ESTIMATE_METHOD}).write(layout.search_choice)
    line = energy_line(training_facts(layout))
    assert line == f"- **Energy**: the search cost 4.50 kJ over 3 trials (training and scoring them; {ESTIMATE_METHOD})."
    _record(TrainRecord, "qlora", 250.0).write(layout.train_metrics)
    _record(BaselineRecord, "full", 1000.0).write(layout.baseline_metrics)
    line = energy_line(training_facts(layout))
    assert "the adapter cost 25 % of the full fine-tune's energy" in line and "; the search cost 4.50 kJ over 3" in line
