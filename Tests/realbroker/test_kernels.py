"""The OpenBLAS kernel choice through the real binary: a faked fallback pick is replaced by the
best core that passes its self-check in a child process, the verdict is cached, a failed verdict
rules a core out, a user's OPENBLAS_CORETYPE is respected, and serve says which kernels run on its
start line and on /metrics."""
import json
import os
import subprocess

from conftest import BIN, ROOT, child_env


def doctor(tmp_path, *args, **env_over):
    env = child_env()
    env.pop("OPENBLAS_CORETYPE", None)  # as a user who set nothing (env -u OPENBLAS_CORETYPE)
    env.pop("STREAMREC_OPENBLAS_CHOICE", None)
    env["STREAMREC_CACHE_DIR"] = str(tmp_path / "cache")
    env.update(env_over)
    r = subprocess.run([str(BIN), "doctor", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def start_line(out):
    return next(line for line in out.splitlines() if line.startswith("OpenBLAS kernels:"))


def test_a_fallback_pick_is_replaced_by_a_verified_core_and_the_verdict_is_cached(tmp_path):
    cores = doctor(tmp_path, "--cores").split()
    assert cores, "at least one OpenBLAS core passes its self-check on an x86-64 CPU"
    best = cores[0]
    out = doctor(tmp_path, STREAMREC_FAKE_OPENBLAS_PICK="Prescott")
    line = start_line(out)
    if best == "Prescott":
        assert "(library:" in line
        return
    assert line.startswith(f"OpenBLAS kernels: {best} (verified: OpenBLAS picked Prescott"), line
    assert f"{best} passed the self-check" in line
    # The process re-ran itself with the verified core: OpenBLAS now reports it.
    assert f"OPENBLAS_CORETYPE {best} (set by streamrec)" in out
    assert f" {best} MAX_THREADS" in out
    cache = json.loads((tmp_path / "cache" / "openblas-kernels.json").read_text())
    [(key, verdicts)] = cache.items()
    assert verdicts[best]["passed"] is True
    # A second start reads the verdict instead of checking again.
    assert "cached" in start_line(doctor(tmp_path, STREAMREC_FAKE_OPENBLAS_PICK="Prescott"))

    # A core whose verdict failed is ruled out: the next one down is chosen.
    if len(cores) > 2:
        verdicts[best] = {"core": best, "passed": False, "detail": "wrong sgemm result (seeded by the test)"}
        (tmp_path / "cache" / "openblas-kernels.json").write_text(json.dumps({key: verdicts}))
        line = start_line(doctor(tmp_path, STREAMREC_FAKE_OPENBLAS_PICK="Prescott"))
        assert line.startswith(f"OpenBLAS kernels: {cores[1]} (verified:"), line


def test_every_core_the_cpu_supports_gets_a_verdict_and_the_running_one_passes(tmp_path):
    out = doctor(tmp_path, "--check-all")
    checks = [line for line in out.splitlines() if line.startswith("check ")]
    usable = doctor(tmp_path, "--cores").split()
    # Every core the CPU supports is checked; --cores lists exactly the ones that passed.
    assert [line.split()[1] for line in checks if ": passed," in line] == usable, "\n".join(checks)
    assert all(": passed," in line or ": FAILED, " in line for line in checks), "\n".join(checks)
    running = start_line(out).split()[2]
    assert running in usable or "(user:" in start_line(out), start_line(out)


def test_a_users_coretype_is_respected(tmp_path):
    line = start_line(doctor(tmp_path, OPENBLAS_CORETYPE="Prescott"))
    assert line.startswith("OpenBLAS kernels: Prescott (user: OPENBLAS_CORETYPE=Prescott set in the environment is respected"), line


def test_serve_names_its_kernels_on_its_start_line_and_on_metrics(deployment, tmp_path):
    env = {"STREAMREC_FAKE_OPENBLAS_PICK": "Prescott", "STREAMREC_CACHE_DIR": str(tmp_path / "cache")}
    service = deployment.serve(env=env)
    status, metrics = service.http("/metrics")
    assert status == 200
    gauges = [line for line in metrics.splitlines() if line.startswith("streamrec_openblas_kernels{")]
    assert len(gauges) == 1, metrics
    assert float(gauges[0].rsplit(" ", 1)[1]) == 1
    if os.environ.get("OPENBLAS_CORETYPE"):  # a machine that pins it: the user's setting wins
        assert 'source="user"' in gauges[0], gauges[0]
    else:
        assert 'library_pick="Prescott"' in gauges[0], gauges[0]
    assert "OpenBLAS kernels:" in service.log_text()
    service.terminate()
