"""The guided demo (sidebar): a clinician is walked through the bundled clinical sample on the
existing pages - the question, the hierarchy, what each node means (its top features), the
readmission drivers and how sure the model is. The texts are data; :func:`node_meanings` reads a
fitted model; :func:`show` draws the current page's step in the sidebar."""

from __future__ import annotations

import streamlit as st

from .. import runs
from ..lattice import node_label

DEMO_DATASET = {"bundled": "clinical", "name": "clinical (bundled sample)"}

#: Page title -> (step title, what to look at, in plain words).
STEPS: dict[str, tuple[str, str]] = {
    "Data": ("1 · The question",
             "3,000 made-up patients with four kinds of records: **diagnoses**, **lab results**, **vital signs** "
             "and **clinical notes**. The question: which kinds of records tell the same story about a patient, "
             "and does that shared story predict **readmission within 30 days**? The table shows what was loaded; "
             "nothing needs fixing here. Next: **Lattice**."),
    "Lattice": ("2 · What may be shared",
                "Each circle is a group of record types that might share information: all four together, "
                "some of them, or one alone. Keep the preset **Full**: the fit will decide which groups really "
                "share something. Next: **Train**."),
    "Train": ("3 · Fit the model",
              "Press **Launch training**. The bar says what the computer is doing and how long is left "
              "(about half a minute here). When it says *Run finished*, open the **Structure** page."),
    "Structure": ("4 · The hierarchy",
                  "Each circle the fit kept is a group of record types that share information; bigger = more "
                  "shared patterns, colour = how much of those records it explains. Below: what each group means, "
                  "from the measurements that weigh most in it. Next: **Prediction**."),
    "Prediction": ("5 · Readmission drivers, and how sure",
                   "Choose the outcome **readmit_30d** and evaluate it. The groups outlined in red are the ones the "
                   "model uses to predict readmission (its drivers). The bars compare it with simpler models; the "
                   "thin lines are 95 % intervals - the wider they are, the less sure the number. Warnings say "
                   "when a test set is too small to trust."),
    "Export": ("6 · Take it with you",
               "Download the HTML report: every figure and table of this run in one file that opens offline."),
}


def node_meanings(model, top: int = 3) -> list[str]:
    """One plain line per node the fit found (largest first): its modalities and its ``top`` features."""
    from ..figures import top_loadings

    out = []
    for n in sorted((n for n in model.nodes_ if model.ranks_[n] > 0), key=len, reverse=True):
        df = top_loadings(model, n, top)
        feats = ", ".join(f"{f} ({m})" for m, f in zip(df["modality"], df["feature"])) if len(df) else "-"
        out.append(f"**{node_label(n)}** ({model.ranks_[n]} pattern{'s' if model.ranks_[n] != 1 else ''}): {feats}")
    return out


def show(page_title: str, selected_run: str | None, workspace: str, load_model) -> None:
    """The sidebar's demo box for ``page_title`` (call inside ``with st.sidebar``)."""
    on = st.toggle("Guided demo", key="demo_mode",
                   help="A walk through the bundled clinical sample, in plain words, on these pages.")
    if not on:
        return
    step = STEPS.get(page_title)
    if step is None:
        return
    title, text = step
    with st.container(border=True):
        st.markdown(f"**{title}**")
        st.markdown(text)
        if page_title == "Structure" and selected_run:
            try:
                model = load_model(selected_run)
            except ValueError:
                return
            st.markdown("**What each group means**")
            for line in node_meanings(model):
                st.markdown("- " + line)
            stab = runs.read_stability(workspace, selected_run)
            if stab is not None:
                st.caption(runs.stability_note(stab))
