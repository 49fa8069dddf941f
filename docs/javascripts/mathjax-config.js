// MathJax 3 configuration for the flowlearn site. Loaded before the vendored
// tex-svg-full.js (MathJax 3.2.2, Apache-2.0, see MATHJAX-LICENSE.txt), so that
// nothing is fetched from outside the site.
//
// Two kinds of math reach the browser:
//   * Markdown pages and API docstrings: pymdownx.arithmatex (generic mode) wraps
//     them in elements of class "arithmatex", delimited by \( \) and \[ \].
//   * Notebook Markdown cells rendered by mkdocs-jupyter: raw $...$ and $$...$$
//     inside elements of class "jp-MarkdownOutput".
// Everything else (code blocks, API signatures, prose containing a dollar sign)
// is left alone: the whole page body carries "md-typeset", which is ignored unless
// an inner element asks to be processed.
window.MathJax = {
  tex: {
    inlineMath: [
      ["\\(", "\\)"],
      ["$", "$"],
    ],
    displayMath: [
      ["\\[", "\\]"],
      ["$$", "$$"],
    ],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "md-typeset|tex2jax_ignore",
    processHtmlClass: "arithmatex|jp-MarkdownOutput",
  },
  svg: {
    // One shared glyph cache per page keeps the SVG small.
    fontCache: "global",
  },
};
