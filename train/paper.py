"""The paper's reference numbers (WAR / UAR in %), to print beside a run on the same corpus.

Table 2 (IEMOCAP and MSP-IMPROV: CRA, MMIN, IF-MMIN, CIF-MMIN, DiCMoR+, CM-ARR) and Table 3
(IEMOCAP ablations: Baseline, w/o UDCL, w/o SPCL, w/o attention, w/ Point). Keys are cmarr's
system names; a row the paper leaves empty is absent. Only IEMOCAP and MSP-IMPROV stores (by their
`corpus` attribute) get reference numbers.
"""

from __future__ import annotations

ROWS = ("{t}", "{s}", "{v}", "{v,t}", "{s,v}", "{s,t}", "Avg.", "{s,v,t}")


def _table(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Parse 'system: war/uar war/uar ...' lines in ROWS order ('-' for an empty cell)."""
    out = {}
    for line in text.strip().splitlines():
        name, cells = line.split(":")
        values = {}
        for row, cell in zip(ROWS, cells.split()):
            if cell != "-":
                war, uar = cell.split("/")
                values[row] = (float(war), float(uar))
        out[name.strip()] = values
    return out


TABLE2 = {
    "iemocap": _table(
        """
        cra: 31.15/27.96 54.58/56.79 53.31/51.17 31.66/28.42 63.12/63.93 32.88/30.13 44.45/43.07 -
        mmin: 67.49/68.46 54.84/56.87 53.17/50.28 72.98/73.60 64.03/64.71 74.07/75.49 64.43/64.90 77.17/77.89
        if-mmin: 66.58/67.51 56.06/58.38 53.11/51.28 72.61/73.14 64.80/66.49 73.77/75.48 64.48/65.38 77.97/78.58
        cif-mmin: 67.97/68.93 56.26/58.46 51.40/51.39 73.00/74.12 66.03/67.17 74.50/75.72 64.86/65.96 79.26/80.34
        dicmor: 68.83/70.15 71.02/72.30 51.60/49.03 72.14/73.36 72.28/73.49 76.89/77.83 68.79/69.36 78.36/79.80
        cm-arr: 69.74/70.92 74.15/75.38 54.06/52.42 73.04/74.09 75.51/76.38 78.95/79.70 70.90/71.48 79.86/81.06
        """
    ),
    "msp-improv": _table(
        """
        cra: 46.78/28.37 37.90/38.96 59.46/42.42 54.96/38.84 57.85/47.70 48.57/37.97 52.59/39.04 -
        mmin: 62.08/57.30 51.60/43.35 60.09/45.75 69.37/63.94 63.74/55.91 64.00/60.98 61.81/54.53 69.70/64.89
        if-mmin: 61.97/58.23 50.46/40.45 61.68/45.29 67.49/63.40 62.42/53.14 63.25/59.91 61.21/53.40 69.03/63.84
        cif-mmin: 62.42/58.71 50.66/40.37 61.10/46.15 69.90/65.36 63.75/55.21 63.78/60.80 61.93/54.43 72.02/67.12
        dicmor: 62.13/59.85 52.78/47.17 59.84/49.33 67.30/64.21 62.70/52.65 67.92/65.37 62.11/56.43 71.69/68.08
        cm-arr: 63.57/61.49 55.55/50.87 62.04/51.01 68.47/65.88 63.84/54.25 69.49/66.85 63.82/58.39 72.37/69.69
        """
    ),
}

TABLE3 = {
    "iemocap": _table(
        """
        baseline: 66.63/67.15 55.57/57.75 42.91/37.54 68.71/68.94 61.10/62.84 75.34/76.61 61.71/61.80 -
        no-udcl: 69.44/70.20 71.90/72.67 50.24/48.35 71.59/72.90 72.06/72.96 76.51/78.04 68.62/69.18 -
        no-spcl: 69.49/70.45 71.89/72.99 51.14/48.56 72.55/73.33 73.37/73.86 77.80/78.83 69.37/69.67 -
        no-attention: 68.71/69.75 71.68/72.72 50.00/47.76 70.72/71.53 72.10/73.47 76.77/77.91 68.33/68.85 -
        point: 66.71/67.96 70.48/71.74 50.35/48.99 71.06/72.19 72.65/73.26 75.53/76.67 67.79/68.46 -
        cm-arr: 69.74/70.92 74.15/75.38 54.06/52.42 73.04/74.09 75.51/76.38 78.95/79.70 70.90/71.48 79.86/81.06
        """
    )
}


def reference(corpus: str, system: str) -> dict[str, tuple[float, float]]:
    """The paper's (WAR, UAR) per row for `system` on `corpus`, from Table 2 or Table 3 ({} if none)."""
    return TABLE2.get(corpus, {}).get(system) or TABLE3.get(corpus, {}).get(system) or {}


# The paper's optimum loss weights (section 4.5, Fig. 4) for the sweep plots.
OPTIMUM = {"alpha": 1.0, "beta": 0.5, "lambda_rec": 10.0}
