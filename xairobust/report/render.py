"""Render summary tables as LaTeX (booktabs), Markdown and the caption text both share."""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from xairobust.report.tables import Cell, Column, Table, cell_text

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
TEX_ARROWS = {"higher": r"$\uparrow$", "lower": r"$\downarrow$"}
TEST_NAMES = {"wilcoxon": "Wilcoxon signed-rank test", "ttest": "paired t-test"}
CORRECTION_NAMES = {"holm": "Holm-corrected", "bonferroni": "Bonferroni-corrected", "none": "uncorrected"}


_TEX_SYMBOLS = {
    "±": r"$\pm$", "×": r"$\times$", "·": r"$\cdot$", "–": "--", "—": "---", "≤": r"$\leq$",
    "≥": r"$\geq$", "→": r"$\rightarrow$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "∞": r"$\infty$",
}


_TEX_CAPITAL_GREEK = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}


def _tex_char(ch: str) -> str:
    """One character as LaTeX that pdflatex's default setup (utf8 + T1) accepts."""
    if ch in _TEX_ESCAPES:
        return _TEX_ESCAPES[ch]
    if ord(ch) < 128 or ch in "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝßàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ":
        return ch
    if ch in _TEX_SYMBOLS:
        return _TEX_SYMBOLS[ch]
    name = unicodedata.name(ch, "")
    if name.startswith(("GREEK SMALL LETTER ", "GREEK CAPITAL LETTER ")):  # labels like "NsLoss λ=60"
        word = name.split()[-1].lower().replace("lamda", "lambda")
        if name.startswith("GREEK CAPITAL"):
            word = word.capitalize()
            if word not in _TEX_CAPITAL_GREEK:
                return {"Chi": "X", "Eta": "H", "Iota": "I", "Kappa": "K", "Zeta": "Z", "Rho": "P",
                        "Epsilon": "E", "Tau": "T", "Mu": "M", "Nu": "N"}.get(word, word[0])  # Latin look-alike
        elif word == "omicron":
            return "o"
        return rf"$\{word}$"
    return "?"  # anything else would stop pdflatex


def tex_escape(text: str) -> str:
    """Text for LaTeX: specials escaped, Greek letters as math, unsupported characters as '?'."""
    return "".join(_tex_char(ch) for ch in str(text))


def md_escape(text: str) -> str:
    return str(text).replace("|", r"\|").replace("*", r"\*").replace("_", r"\_")


def _groups(columns: list[Column]) -> list[tuple[str, int]]:
    """Consecutive columns sharing a criterion -> (criterion, span)."""
    out: list[tuple[str, int]] = []
    for col in columns:
        if out and out[-1][0] == col.group:
            out[-1] = (col.group, out[-1][1] + 1)
        else:
            out.append((col.group, 1))
    return out


def caption_parts(table: Table, baseline: str, test: str, correction: str, alpha: float, have_stats: bool) -> dict[str, str]:
    """Plain-text pieces of the caption (the renderers add markup)."""
    what = "all explainers" if table.name == "combined" else f"explainer {table.name}"
    sig = (
        f"differs from {baseline} ({TEST_NAMES[test]} paired on samples, {CORRECTION_NAMES[correction]} p < {alpha:g})"
        if have_stats else ""
    )
    return {"what": what, "sig": sig}


@dataclass(frozen=True)
class CellMarkup:
    """How one output format writes a table cell: the ± joint, an empty cell, best / second-best
    marks (``{}`` is the text) and the significance marker."""

    pm: str
    empty: str
    best: str
    second: str
    star: str
    escape: Callable[[str], str] = str


TEX_CELL = CellMarkup(r" $\pm$ ", "--", r"\textbf{{{}}}", r"\underline{{{}}}", r"$^{{*}}$")
MD_CELL = CellMarkup(" ± ", "–", "**{}**", "<u>{}</u>", r"\*")
HTML_CELL = CellMarkup(" ± ", "–", "<b>{}</b>", "<u>{}</u>", "<sup>*</sup>", html.escape)


def render_cell(cell: Cell, decimals: int, markup: CellMarkup) -> str:
    """A table cell (mean ± std, best/second mark, significance marker) in ``markup``'s format."""
    mean, std = cell_text(cell, decimals, markup.pm)
    if not mean:
        return markup.empty
    text = markup.escape(mean + std)
    if cell.mark in (1, 2):
        text = (markup.best if cell.mark == 1 else markup.second).format(text)
    return text + (markup.star.format() if cell.significant else "")


def latex_table(table: Table, caption: dict[str, str]) -> str:
    """One ``table`` float: booktabs rules, criterion groups with cmidrules, marks and markers."""
    cols = table.columns
    ncol = 2 + len(cols)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\caption{Explanation quality, " + tex_escape(caption["what"])
        + (": " + tex_escape(caption["spread"]) if caption.get("spread")
           else r": mean $\pm$ std over the $n$ runs (seeds) of each method; a run's value is its mean over test samples.")
        + r" $\uparrow$/$\downarrow$: higher/lower is better"
        + (r"; \textbf{bold}: best, \underline{underlined}: second best in each column." if caption.get("marks", True) else ".")
        + (r" $^{*}$: " + tex_escape(caption["sig"]) + "." if caption["sig"] else "")
        + "}",
        r"\label{tab:xairobust-" + "".join(ch if ch.isalnum() else "-" for ch in table.name) + "}",
        # Shrink to the line width only when wider; never enlarge a small table.
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{lr" + "c" * len(cols) + "}",
        r"\toprule",
    ]
    groups = _groups(cols)
    head, rules, start = [" ", " "], [], 3
    for name, span in groups:
        head.append(rf"\multicolumn{{{span}}}{{c}}{{{tex_escape(name)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    lines.append(" & ".join(head) + r" \\")
    lines.append(" ".join(rules))
    names = [tex_escape(c.label) + (" " + TEX_ARROWS[c.direction] if c.direction in TEX_ARROWS else "") for c in cols]
    lines.append(" & ".join([tex_escape(caption.get("rows", "Method")), "$n$", *names]) + r" \\")
    for block in table.blocks:
        lines.append(r"\midrule")
        if block.title:
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{tex_escape(block.title.replace(' · ', ', '))}}}}} \\")
        for lab in block.rows:
            cells = [render_cell(block.cells[(lab, c.key)], table.decimals[c.key], TEX_CELL) for c in cols]
            lines.append(" & ".join([tex_escape(lab), str(block.n[lab]), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


LATEX_HEADER = (
    "% Written by `xairobust report`. Tables for \\input{} into a paper need\n"
    "% \\usepackage{booktabs} and \\usepackage{graphicx}.\n"
)


def latex_document(bodies: list[str], writer: str = "xairobust report", name: str = "table.tex") -> tuple[str, str]:
    """(table.tex: a document pdflatex compiles as is, table_body.tex: the tables alone)."""
    body = LATEX_HEADER.replace("xairobust report", writer) + "\n".join(bodies)
    doc = "\n".join([
        f"% Written by `{writer}`; compile with `pdflatex {name}`.",
        r"\documentclass{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[margin=1.5cm,landscape]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
        "\n".join(bodies),
        r"\end{document}",
        "",
    ])
    return doc, body


def markdown_table(table: Table, caption: dict[str, str]) -> str:
    cols = table.columns
    groups = " · ".join(
        f"{g}: " + ", ".join(c.label for c in cols if c.group == g) for g, _ in _groups(cols)
    )
    lines = [
        f"### {md_escape(caption['what'])}",
        "",
        (caption.get("spread") or "Mean ± std over the n runs (seeds) of each method; a run's value is its mean over"
         " test samples.") + " "
        "↑/↓: higher/lower is better"
        + ("; **bold**: best, <u>underlined</u>: second best in each column." if caption.get("marks", True) else ".")
        + (f" \\*: {caption['sig']}." if caption["sig"] else ""),
        f"Columns — {groups}.",
        "",
        "| " + " | ".join([md_escape(caption.get("rows", "Method")), "n", *[md_escape(f"{c.label} {c.arrow}".strip()) for c in cols]]) + " |",
        "| " + " | ".join([":--", "--:", *["--:" for _ in cols]]) + " |",
    ]
    for block in table.blocks:
        if block.title:
            lines.append("| " + " | ".join([f"*{md_escape(block.title)}*", "", *["" for _ in cols]]) + " |")
        for lab in block.rows:
            cells = [render_cell(block.cells[(lab, c.key)], table.decimals[c.key], MD_CELL) for c in cols]
            lines.append("| " + " | ".join([md_escape(lab), str(block.n[lab]), *cells]) + " |")
    return "\n".join(lines) + "\n"


def html_table(table: Table, caption: dict[str, str]) -> str:
    """The same table as ``markdown_table`` as an HTML fragment (the study page embeds it)."""
    cols = table.columns
    esc = html.escape
    sig = f" <sup>*</sup>: {esc(caption['sig'])}." if caption["sig"] else ""
    lines = [
        f'<table class="report"><caption>{esc(caption["what"])}: mean ± std over the n runs (seeds) of each method;'
        " a run's value is its mean over test samples. ↑/↓: higher/lower is better; <b>bold</b>: best,"
        f" <u>underlined</u>: second best in each column.{sig}</caption>",
        "<thead><tr><th></th><th></th>"
        + "".join(f'<th colspan="{span}">{esc(g)}</th>' for g, span in _groups(cols)) + "</tr>",
        "<tr><th>Method</th><th>n</th>" + "".join(f"<th>{esc(f'{c.label} {c.arrow}'.strip())}</th>" for c in cols)
        + "</tr></thead><tbody>",
    ]
    for block in table.blocks:
        if block.title:
            lines.append(f'<tr><td colspan="{2 + len(cols)}"><i>{esc(block.title)}</i></td></tr>')
        for lab in block.rows:
            cells = "".join(f"<td>{render_cell(block.cells[(lab, c.key)], table.decimals[c.key], HTML_CELL)}</td>" for c in cols)
            lines.append(f"<tr><th>{esc(lab)}</th><td>{block.n[lab]}</td>{cells}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines) + "\n"


def markdown_grid(header: list[str], rows: list[list[str]]) -> list[str]:
    """A plain Markdown table (header, rule, one line a row) of cells already formatted; the
    sections whose tables are not a ``Table`` (manipulation, visual, MER) render through it."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in rows)]


def latex_grid(colspec: str, header: list[str], rows: list[list[str]]) -> str:
    """A plain booktabs ``tabular`` of cells already in LaTeX (escape text with ``tex_escape``)."""
    lines = [rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(cells) + r" \\" for cells in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"

