"""The audit's artefacts: report.json (every number), report.html (self-contained) and PNGs.

Every number the HTML shows is formatted by :func:`fmt` from the value stored in report.json, so
the two agree digit for digit; every figure is embedded (a data URI), saved beside the report
and captioned with the command that made it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .accounting import AccountingSection
from .checklist import FAIL, NOT_CHECKED, PASS, Checklist
from .empirical import EmpiricalAudit
from .released import ReleasedModel
from .server_view import ServerView

__all__ = ["NOT_DONE", "fmt", "write_report"]

#: sections of issue 13 that this version does not produce (named in the report, not faked)
NOT_DONE: tuple[str, ...] = ()


def fmt(x: float) -> str:
    """How the report prints a number (4 significant digits)."""
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.4g}"


def _plots(out: Path, acc: AccountingSection, emp: EmpiricalAudit) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    rounds = [r["round"] for r in acc.rounds]
    ax.plot(rounds, [r["total_rdp"] for r in acc.rounds], "o-", label="RDP")
    ax.plot(rounds, [r["total_prv"] for r in acc.rounds], "s--", label="PRV")
    ax.axhline(acc.budget_epsilon, color="red", lw=1, label="budget")
    ax.set(xlabel="round", ylabel=f"cumulative epsilon (delta={acc.delta:g})",
           title=f"ledger of {acc.enterprise}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accounting.png", dpi=110)
    plt.close(fig)
    files["accounting"] = "accounting.png"

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names = ["theory RDP", "theory PRV", "white-box", "black-box", "white f-DP"]
    values = [emp.theory_rdp, emp.theory_prv, emp.white_box.epsilon, emp.black_box.epsilon,
              emp.white_box_fdp.epsilon]
    colors = ["#888", "#bbb", "#1f77b4", "#ff7f0e", "#2ca02c"]
    if emp.white_box_fdp.epsilon_gdp is not None:  # the claim is a Gaussian (q = 1)
        names.append("white GDP")
        values.append(emp.white_box_fdp.epsilon_gdp)
        colors.append("#98df8a")
    bars = ax.bar(names, values, color=colors)
    ax.tick_params(axis="x", labelsize=8)
    ax.bar_label(bars, labels=[fmt(v) for v in values])
    ax.set(ylabel="epsilon", title=f"one-run audit, {emp.white_box.canaries} canaries each "
           f"({emp.confidence:.0%} confidence)")
    fig.tight_layout()
    fig.savefig(out / "audit_bounds.png", dpi=110)
    plt.close(fig)
    files["audit_bounds"] = "audit_bounds.png"

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, scores, inc, title in ((axes[0], emp.white_scores, emp.white_included, "white-box"),
                                   (axes[1], emp.black_scores, emp.black_included, "black-box")):
        ax.hist(scores[inc], bins=30, alpha=0.6, label="included")
        ax.hist(scores[~inc], bins=30, alpha=0.6, label="left out")
        ax.set(title=f"{title} canary scores", xlabel="score (higher: guessed included)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "canary_scores.png", dpi=110)
    plt.close(fig)
    files["canary_scores"] = "canary_scores.png"
    return files


def _server_plot(out: Path, sv: ServerView) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(sv.results)
    labels = [f"{r.protection}: {r.attacker.split(' (')[0].split(':')[0][:34]}"
              + (" [control]" if r.positive_control else "") for r in rows]
    colors = ["#c22" if r.protection == "plaintext" else "#999" if r.positive_control
              else "#2a2" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [abs(r.correlation) for r in rows], color=colors)
    axes[0].axvline(sv.chance_band, color="k", ls=":", lw=1, label="chance band")
    axes[0].set(xlabel="|correlation| of estimate with the true update", xlim=(0, 1.05))
    axes[0].legend(loc="lower right", fontsize=7)
    axes[1].barh(y, [r.mia_auc for r in rows], color=colors)
    axes[1].axvline(0.5, color="k", lw=1)
    axes[1].axvspan(0.5 - 3 * sv.auc_sd, 0.5 + 3 * sv.auc_sd, color="#ddd", zorder=0,
                    label="chance (3 sd)")
    axes[1].set(xlabel="membership-inference AUC on the estimate", xlim=(0, 1.05))
    axes[1].legend(loc="lower right", fontsize=7)
    axes[0].set_yticks(list(y), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("server view: green protected, red unprotected, grey positive controls",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "server_view.png", dpi=110)
    plt.close(fig)
    return "server_view.png"


def _released_plot(out: Path, rm: ReleasedModel) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
    for ax, mem, non, title in (
            (axes[0], rm.member_losses_plain, rm.nonmember_losses_plain,
             f"no DP: AUC {fmt(rm.auc_plain)}"),
            (axes[1], rm.member_losses_dp, rm.nonmember_losses_dp,
             f"DP (eps {fmt(rm.epsilon)}): AUC {fmt(rm.auc_dp)}")):
        bins = np.linspace(0, max(float(np.max(mem)), float(np.max(non)), 1e-6), 25)
        ax.hist(mem, bins=bins, alpha=0.6, label="members")
        ax.hist(non, bins=bins, alpha=0.6, label="non-members")
        ax.set(title=title, xlabel="loss under the released model")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "released_mia.png", dpi=110)
    plt.close(fig)
    return "released_mia.png"


def _img(out: Path, name: str, command: str, caption: str) -> str:
    data = base64.b64encode((out / name).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} &mdash; <a href=\"{name}\">{name}</a>, made by "
            f"<code>{html.escape(command)}</code></figcaption></figure>")


def _gdp_row(emp: EmpiricalAudit) -> str:
    """The Gaussian-curve f-DP bound, where the claim is a Gaussian (q = 1)."""
    b = emp.white_box_fdp
    if b.epsilon_gdp is None or b.mu is None or emp.gaussian_mu is None:
        return ""
    frac = f", {fmt(100 * b.epsilon_gdp / emp.theory)} % of the claim" if emp.theory > 0 else ""
    return (f"<tr><td>white-box Gaussian (GDP) lower bound</td><td>{fmt(b.epsilon_gdp)}</td>"
            f"<td>mu at least {fmt(b.mu)} (claimed mu {fmt(emp.gaussian_mu)}), "
            f"{b.gdp_correct} of {b.gdp_guesses} guesses right{frac}</td></tr>")


def false_alarm_text(emp: EmpiricalAudit) -> str:
    """How the verdict's combined false-alarm rate is bounded, in words."""
    k, level = len(emp.bounds()), 100 * (1 - emp.confidence)
    return (f"a union bound over {k} bounds at {fmt(level)} % each, {k} x {fmt(level)} % = "
            f"{fmt(100 * emp.false_alarm_bound)} %; they come from one run and are not "
            "independent, and no smaller rate is claimed")


def _verdict(acc: AccountingSection, emp: EmpiricalAudit) -> tuple[str, str]:
    if emp.violation:
        top = emp.best_bound
        return "fail", (f"VIOLATION: an empirical lower bound ({fmt(top)}: "
                        f"{', '.join(emp.violations)}) exceeds the claimed epsilon "
                        f"({fmt(emp.theory)}): the pipeline leaks more than its ledger says "
                        f"(a correct pipeline is flagged so with probability at most "
                        f"{fmt(100 * emp.false_alarm_bound)} %: {false_alarm_text(emp)})")
    if emp.noise_too_small:
        return "fail", (f"NOISE BELOW CLAIM: measured sigma {fmt(emp.noise_sigma_hat)} < "
                        f"recorded {fmt(emp.claimed.noise_multiplier)} (p = "
                        f"{fmt(emp.noise_p_value)})")
    if acc.remaining <= 0:
        return "warn", "BUDGET SPENT: the ledger has no epsilon left"
    return "pass", (f"PASS: no empirical bound exceeds the claimed epsilon {fmt(emp.theory)}; "
                    f"noise consistent with sigma {fmt(emp.claimed.noise_multiplier)}")


def _server_line(sv: ServerView) -> tuple[str, str]:
    plain = sv.get("plaintext")[0]
    prot = [r for r in sv.results if r.protection != "plaintext" and not r.positive_control]
    worst = max(abs(r.correlation) for r in prot)
    if sv.protected_leak:
        return "fail", (f"LEAK: an attacker within the threat model correlates {fmt(worst)} with "
                        "an individual update")
    if not sv.controls_ok:
        return "warn", "INCONCLUSIVE: a positive control did not recover the update"
    return "pass", (f"no individual update recovered (|corr| <= {fmt(worst)}, chance "
                    f"{fmt(sv.chance_band)}); unprotected round: read exactly, membership AUC "
                    f"{fmt(plain.mia_auc)}")


def _checklist_line(cl: Checklist) -> tuple[str, str]:
    n_pass = sum(r.status == PASS for r in cl.rows)
    text = f"{n_pass} pass, {len(cl.failed)} fail, {len(cl.unchecked)} not checked"
    if cl.failed:
        return "fail", text + ": " + ", ".join(r.item for r in cl.failed)
    if cl.unchecked:
        return "warn", text + " (" + ", ".join(r.item for r in cl.unchecked) + ")"
    return "pass", text


def _released_line(rm: ReleasedModel) -> tuple[str, str]:
    text = (f"loss-threshold MIA AUC {fmt(rm.auc_dp)} with DP (epsilon {fmt(rm.epsilon)}) vs "
            f"{fmt(rm.auc_plain)} without (chance 0.5, sd {fmt(rm.auc_sd)})")
    if not rm.dp_within_bound:
        return "fail", text + f": advantage {fmt(rm.advantage_dp)} above the DP bound"
    return "pass", text


def _summary(acc: AccountingSection, emp: EmpiricalAudit, sv: ServerView | None,
             cl: Checklist | None, rm: ReleasedModel | None) -> list[dict[str, str]]:
    status, text = _verdict(acc, emp)
    spent = (f"spent {fmt(acc.spent)} of {fmt(acc.budget_epsilon)} (left {fmt(acc.remaining)}); "
             + (f"RDP and PRV differ by {fmt(100 * acc.disagreement)} %" if acc.flagged
                else "RDP and PRV agree within 2 %"))
    rows = [{"section": "Accounting", "anchor": "accounting",
             "status": "warn" if acc.flagged or acc.remaining <= 0 else "pass", "text": spent},
            {"section": "Empirical audit", "anchor": "empirical", "status": status,
             "text": text}]
    parts = (("Server view", "server-view", None if sv is None else _server_line(sv)),
             ("Configuration", "checklist", None if cl is None else _checklist_line(cl)),
             ("Released model", "released", None if rm is None else _released_line(rm)))
    for name, anchor, line in parts:
        st, tx = line if line is not None else ("warn", "skipped in this run")
        rows.append({"section": name, "anchor": anchor, "status": st, "text": tx})
    return rows


def _overall(rows: list[dict[str, str]]) -> tuple[str, str]:
    fails = [r["section"] for r in rows if r["status"] == "fail"]
    warns = [r["section"] for r in rows if r["status"] == "warn"]
    if fails:
        return "fail", f"FAIL in {', '.join(fails)}"
    if warns:
        return "warn", f"PASS with warnings in {', '.join(warns)}"
    return "pass", "PASS: every section"


def write_report(out: Path, *, accounting: AccountingSection, empirical: EmpiricalAudit,
                 command: str, ledger: str, data: str, server: ServerView | None = None,
                 checklist: Checklist | None = None, released: ReleasedModel | None = None,
                 ) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(out, accounting, empirical)
    if server is not None:
        files["server_view"] = _server_plot(out, server)
    if released is not None:
        files["released_mia"] = _released_plot(out, released)
    status, verdict = _verdict(accounting, empirical)
    summary = _summary(accounting, empirical, server, checklist, released)
    overall, overall_text = _overall(summary)
    doc: dict[str, Any] = {
        "format": "secagg-audit-report/1", "command": command,
        "inputs": {"ledger": ledger, "data": data}, "verdict": {"status": status, "text": verdict},
        "overall": {"status": overall, "text": overall_text}, "summary": summary,
        "accounting": accounting.to_dict(), "empirical": empirical.to_dict(),
        "server_view": server.to_dict() if server is not None else None,
        "checklist": checklist.to_dict() if checklist is not None else None,
        "released_model": released.to_dict() if released is not None else None,
        "figures": [{"file": f, "command": command} for f in files.values()],
        "not_done": list(NOT_DONE),
    }
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "report.html").write_text(_html(out, doc, accounting, empirical, files, command,
                                           server, checklist, released))
    return doc


_CSS = """body{font-family:system-ui,sans-serif;max-width:62rem;margin:1.5rem auto;padding:0 1rem;
color:#222}h1{font-size:1.5rem;margin:.2rem 0}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.pass{background:#e6f4e6;border-left:6px solid #2a2}
.fail{background:#fbe7e7;border-left:6px solid #c22}.warn{background:#fff5dd;border-left:6px solid
#d90}.verdict{padding:.6rem 1rem;font-size:1.1rem;margin:.6rem 0}.flag{color:#c22;font-weight:600}
figure{margin:.8rem 0}img{max-width:100%}figcaption{font-size:.85rem;color:#555}code{font-size:.85rem}
table.summary td,table.summary th{text-align:left;vertical-align:top}table.summary td.st{font-weight:600;
text-transform:uppercase;font-size:.8rem;white-space:nowrap}td.pass{color:#161}td.fail{color:#a11}
td.warn,td.not-checked{color:#850}.sub{color:#555;font-size:.9rem;margin:.2rem 0 .6rem}
table.rows td,table.rows th{text-align:left;vertical-align:top;font-size:.9rem}
"""


def _html(out: Path, doc: dict[str, Any], acc: AccountingSection, emp: EmpiricalAudit,
          files: dict[str, str], command: str, sv: ServerView | None = None,
          cl: Checklist | None = None, rm: ReleasedModel | None = None) -> str:
    e = html.escape
    summary = "".join(
        f'<tr><td><a href="#{r["anchor"]}">{e(r["section"])}</a></td>'
        f'<td class="st {r["status"]}">{e(r["status"])}</td><td>{e(r["text"])}</td></tr>'
        for r in doc["summary"])
    flag = (f'<span class="flag">RDP and PRV differ by {fmt(100 * acc.disagreement)} % '
            f"(&gt; 2 %)</span>" if acc.flagged else f"RDP and PRV agree within 2 % "
            f"({fmt(100 * acc.disagreement)} %)")
    rows = "".join(
        f"<tr><td>{r['round']}</td><td>{fmt(r['sample_rate'])}</td><td>"
        f"{fmt(r['noise_multiplier'])}</td><td>{r['steps']}</td><td>{fmt(r['epsilon_rdp'])}</td>"
        f"<td>{fmt(r['epsilon_prv'])}</td><td>{fmt(r['total_rdp'])}</td>"
        f"<td>{fmt(r['total_prv'])}</td></tr>" for r in acc.rounds)
    wb, bb = emp.white_box, emp.black_box
    noise_flag = ' <span class="flag">(noise below the claim)</span>' if emp.noise_too_small else ""
    plant = f" with planted bug <b>{e(emp.plant.value)}</b>" if emp.plant else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>secagg audit: {e(acc.enterprise)}</title><style>{_CSS}</style></head><body>
<h1>Privacy audit of {e(acc.enterprise)}</h1>
<div class="verdict {doc['overall']['status']}">{e(doc['overall']['text'])}</div>
<table class="summary"><tr><th>section</th><th>status</th><th>finding</th></tr>{summary}</table>
<p class="sub">Made by <code>{e(command)}</code>; every number is in report.json.</p>

<a id="accounting"></a><h2>Accounting</h2>
<table><tr><th>what</th><th>epsilon</th><th>note</th></tr>
<tr><td>spent (ledger, {e(acc.accountant)})</td><td>{fmt(acc.spent)}</td>
<td>budget {fmt(acc.budget_epsilon)}, left {fmt(acc.remaining)}, delta {fmt(acc.delta)}</td></tr>
<tr><td>claimed for the audited round</td><td>{fmt(emp.theory)}</td>
<td>RDP {fmt(emp.theory_rdp)}, PRV {fmt(emp.theory_prv)}</td></tr>
<tr><td>white-box lower bound</td><td>{fmt(wb.epsilon)}</td>
<td>{wb.correct} of {wb.guesses} guesses right, {wb.canaries} gradient canaries</td></tr>
<tr><td>black-box lower bound</td><td>{fmt(bb.epsilon)}</td>
<td>{bb.correct} of {bb.guesses} guesses right, {bb.canaries} input canaries</td></tr>
<tr><td>white-box f-DP lower bound</td><td>{fmt(emp.white_box_fdp.epsilon)}</td>
<td>same run, (epsilon, delta) trade-off curve; {emp.white_box_fdp.correct} of
{emp.white_box_fdp.guesses} guesses right</td></tr>
{_gdp_row(emp)}
</table>
<p>Each lower bound holds with {fmt(100 * emp.confidence)} % confidence. The verdict flags a
violation when any of the {len(emp.bounds())} bounds above exceeds the claim, so a correct
pipeline is flagged with probability at most {fmt(100 * emp.false_alarm_bound)} %
({e(false_alarm_text(emp))}). {flag}.</p>
<p>Every round recomputed from its mechanism (the file's totals are not read), sample-level,
delta {fmt(acc.delta)}. Client-level epsilon: {e(str(doc['accounting']['client_level']))}.</p>
<table><tr><th>round</th><th>q</th><th>sigma</th><th>steps</th><th>eps RDP</th><th>eps PRV</th>
<th>total RDP</th><th>total PRV</th></tr>{rows}</table>
<p>Total: RDP {fmt(acc.epsilon_rdp)}, PRV {fmt(acc.epsilon_prv)}; spent {fmt(acc.spent)} of
{fmt(acc.budget_epsilon)}, remaining {fmt(acc.remaining)}.</p>
{_img(out, files['accounting'], command, 'Cumulative epsilon per round, both accountants')}

<a id="empirical"></a><h2>Empirical audit of the DP-SGD pipeline</h2>
<p>One run of the enterprise's own training (secure noise, Poisson sampling, Opacus clipping) on
{emp.records} rows (records and included canaries){plant}: claimed q {fmt(emp.claimed.sample_rate)},
sigma {fmt(emp.claimed.noise_multiplier)}, {emp.claimed.steps} steps; run q
{fmt(emp.run.sample_rate)}, sigma {fmt(emp.run.noise_multiplier)}, {emp.run.steps} steps, batch
{emp.batch_size}. Method: Steinke, Nasr, Jagielski 2023 (one training run); each canary included
with probability 1/2; guesses on the highest and lowest scores, the confidence split over
{len(wb.by_guesses)} guess counts. The same guesses are also bounded through f-DP (Mahloujifar,
Melis, Chaudhuri 2024): against the (epsilon, delta) trade-off curve, and where the claim is a
Gaussian (q = 1) against the Gaussian curve, whose mu converts to epsilon at the ledger's delta
(tighter at high epsilon; a bound among Gaussian-shaped mechanisms).</p>
<p>Noise check: on canary coordinates absent from a batch, measured sigma
{fmt(emp.noise_sigma_hat)} over {emp.noise_samples} samples against the recorded
{fmt(emp.claimed.noise_multiplier)}; p-value of "noise at least as recorded":
{fmt(emp.noise_p_value)} (flagged below {fmt(doc['empirical']['noise_check']['level'])}){noise_flag}.</p>
{_img(out, files['audit_bounds'], command, 'Empirical lower bounds beside the theoretical epsilon')}
{_img(out, files['canary_scores'], command, 'Canary scores, included vs left out')}
{_server_html(out, sv, files, command)}
{_checklist_html(cl)}
{_released_html(out, rm, files, command)}
<p>Made by <code>{e(command)}</code>; every number is in report.json.</p>
</body></html>
"""


def _server_html(out: Path, sv: ServerView | None, files: dict[str, str], command: str) -> str:
    e = html.escape
    if sv is None:
        return '<a id="server-view"></a><h2>Server view</h2><p>Skipped in this run.</p>'
    rows = "".join(
        f"<tr><td>{e(r.protection)}</td><td>{e(r.attacker)}"
        f"{' <b>(positive control)</b>' if r.positive_control else ''}</td>"
        f"<td>{'yes' if r.recovered else 'no'}</td><td>{fmt(r.correlation)}</td>"
        f"<td>{fmt(r.relative_error)}</td><td>{fmt(r.mia_auc)}</td><td>{e(r.detail)}</td></tr>"
        for r in sv.results)
    status, line = _server_line(sv)
    return f"""<a id="server-view"></a><h2>Server view: what the server can learn from what it stores</h2>
<div class="verdict {status}">{e(line)}</div>
<p>{sv.clients} clients, one round each of masking (active mode, t = {sv.threshold} of
{sv.neighbours + 1} holders), CKKS ({e(sv.ckks_preset)}, real SEAL ciphertexts) and plaintext
FedAvg, all carrying the same updates: one FedSGD step of a softmax head with
{sv.vector_length} weights ({e(sv.to_dict()['model'])}), the victim's on {sv.members} of the
enterprise's records. The attacker gets everything the server stored (masking: every message
sent to it, including the unmask shares; CKKS: public parameters and the victim's ciphertexts)
and decodes its best estimate of the victim's update. Membership inference: the victim's
{sv.members} records against {sv.nonmembers} held-out ones, scored by the cosine of each record's
gradient with the estimate (chance AUC 0.5, sd {fmt(sv.auc_sd)}). The released aggregate alone
gives AUC {fmt(sv.aggregate_auc)}: that is what the sum reveals, which differential privacy, not
masking, bounds. Seed {sv.seed}.</p>
<table class="rows"><tr><th>round</th><th>attacker holds</th><th>recovered</th><th>corr</th>
<th>rel. error</th><th>MIA AUC</th><th>detail</th></tr>{rows}</table>
{_img(out, files['server_view'], command, 'Correlation and membership AUC per attacker')}"""


def _checklist_html(cl: Checklist | None) -> str:
    e = html.escape
    if cl is None:
        return '<a id="checklist"></a><h2>Configuration checklist</h2><p>Skipped in this run.</p>'
    rows = "".join(
        f'<tr><td>{e(r.item)}</td><td class="st {r.status.replace(" ", "-")}">{e(r.status)}</td>'
        f"<td>{e(r.found)}</td><td>{e(r.requirement)}</td><td>{e(r.fix)}</td></tr>"
        for r in cl.rows)
    return f"""<a id="checklist"></a><h2>Configuration checklist</h2>
<p>Each row is read from the configuration objects the round uses ({PASS} / {FAIL} /
{NOT_CHECKED}); the last column is the fix.</p>
<table class="rows summary"><tr><th>item</th><th>status</th><th>found</th><th>requirement</th>
<th>fix</th></tr>{rows}</table>"""


def _released_html(out: Path, rm: ReleasedModel | None, files: dict[str, str],
                   command: str) -> str:
    e = html.escape
    if rm is None:
        return '<a id="released"></a><h2>Released model</h2><p>Skipped in this run.</p>'
    status, line = _released_line(rm)
    d = rm.to_dict()["mean_loss"]
    return f"""<a id="released"></a><h2>Released model: loss-threshold membership inference</h2>
<div class="verdict {status}">{e(line)}</div>
<p>The enterprise's pipeline trained twice from the same weights on {rm.members} member records
({rm.epochs} epochs, batch {rm.batch_size}): with DP-SGD (sigma {fmt(rm.noise_multiplier)},
epsilon {fmt(rm.epsilon)} at delta {fmt(rm.delta)}, PRV) and without. Attack (Yeom et al. 2018):
score each record by minus its loss; {rm.nonmembers} held-out records are the non-members.</p>
<table><tr><th>model</th><th>AUC</th><th>advantage</th><th>loss members</th>
<th>loss non-members</th></tr>
<tr><td>no DP</td><td>{fmt(rm.auc_plain)}</td><td>{fmt(rm.advantage_plain)}</td>
<td>{fmt(d['no_dp']['members'])}</td><td>{fmt(d['no_dp']['nonmembers'])}</td></tr>
<tr><td>DP</td><td>{fmt(rm.auc_dp)}</td><td>{fmt(rm.advantage_dp)}</td>
<td>{fmt(d['dp']['members'])}</td><td>{fmt(d['dp']['nonmembers'])}</td></tr></table>
<p>Chance: AUC 0.5, sd {fmt(rm.auc_sd)} for this many records. DP bound on the advantage at
epsilon {fmt(rm.epsilon)}: {fmt(rm.advantage_bound)} (Humphries et al. 2020).</p>
{_img(out, files['released_mia'], command, 'Losses of members and non-members, with and without DP')}"""
