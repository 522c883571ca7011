// A bar chart as inline SVG (no library): one bar per item, its value in a <title> for hover and screen readers.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function barChart(box, items, unit) {
  const width = 720;
  const height = 200;
  const pad = { top: 10, right: 10, bottom: 28, left: 44 };
  const max = Math.max(1, ...items.map((i) => i.value));
  const inner = { w: width - pad.left - pad.right, h: height - pad.top - pad.bottom };
  const step = inner.w / Math.max(1, items.length);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${unit} per day, at most ${max}` });
  for (const f of [0, 0.5, 1]) {
    const y = pad.top + inner.h * (1 - f);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid-line" }));
    root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, String(Math.round(max * f * 100) / 100)));
  }
  items.forEach((item, i) => {
    const h = (item.value / max) * inner.h;
    const bar = svg("rect", { x: pad.left + i * step + step * 0.15, y: pad.top + inner.h - h, width: step * 0.7, height: Math.max(h, item.value ? 1 : 0), class: "bar", "data-label": item.label, "data-value": item.value });
    bar.append(svg("title", {}, `${item.label}: ${item.value} ${unit}`));
    root.append(bar);
  });
  const every = Math.max(1, Math.ceil(items.length / 8));
  items.forEach((item, i) => {
    if (i % every) return;
    root.append(svg("text", { x: pad.left + i * step + step / 2, y: height - 8, "text-anchor": "middle", class: "axis" }, item.label.slice(5)));
  });
  box.replaceChildren(root);
}
