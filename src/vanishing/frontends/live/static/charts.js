// The charts of a run's panel: uPlot line charts (uPlot, vendored in uplot/, is the global
// `uPlot`) and canvases drawn by hand: the heatmaps (layer x step, recurrent layer x time
// step) and the histograms. A layer
// is named only by the names the server sent; where it sent none the tick stays blank.

// viridis at 10 stops: dark = little gradient, yellow = much
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const AXIS_FONT = "12px system-ui, sans-serif";
// a recurrent layer's colour after the first (which takes its run's): apart from the runs'
export const LAYER_COLOURS = ["#6c3483", "#117a65", "#7e5109", "#2e4053", "#a93226"];

export function lineChart(target, width, options, data) {
  return new globalThis.uPlot({ width, height: 170, legend: { live: false }, ...options }, data, target);
}

export function profileOptions(weighted, colour, firstStep, label = "‖∇W‖") {
  // one value per weighted layer (x: 1 .. n) on a log scale, now and at the first probe: the
  // weight-gradient norm, or the update ratio ‖ΔW‖/‖W‖ of the optimizer's step (`label`)
  const axis = layerAxis("layer", weighted);
  return {
    padding: [null, axis.overhang, null, null],
    scales: { x: { time: false }, y: { distr: 3, log: 10 } },
    axes: [
      axis.axis,
      { label, size: 52, filter: decades, values: (u, splits) => splits.map((v) => (v === null ? "" : exp(v))) },
    ],
    series: [
      { label: "layer" },
      { label: "now", stroke: colour, width: 2.5, points: { show: true, size: 6, fill: colour } },
      { label: `step ${firstStep}`, stroke: "#9aa0a6", width: 1, dash: [4, 4] },
    ],
  };
}

export function timeOptions(names, colours, firstStep) {
  // x: time steps 1 .. T; per recurrent layer ‖∂L/∂h_t‖ on a log scale, now and at the first
  // probe (dashed, paler)
  const series = [{ label: "t" }];
  names.forEach((name, i) => {
    series.push({ label: name, stroke: colours[i], width: 2 });
    series.push({ label: `${name}, step ${firstStep}`.trim(), stroke: `${colours[i]}99`, width: 1, dash: [4, 4] });
  });
  return {
    height: 190,
    legend: { live: false, show: true },
    scales: { x: { time: false }, y: { distr: 3, log: 10 } },
    axes: [
      { label: "time step t", font: AXIS_FONT },
      { label: "‖∂L/∂hₜ‖", size: 52, filter: decades, values: (u, splits) => splits.map((v) => (v === null ? "" : exp(v))) },
    ],
    series,
  };
}

export function lossOptions(colour, regression = false) {
  // x: steps; the probe batch's loss, each epoch's train and test loss and its test accuracy
  // (a regression: its test loss is the mean squared error, drawn beside its baseline)
  const dot = (c) => ({ show: true, size: 8, fill: c, stroke: c });
  if (regression) {
    return {
      height: 190,
      legend: { live: false, show: true },
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss (MSE)", size: 52 }],
      series: [
        { label: "step" },
        { label: "probe loss", stroke: colour, width: 1.5, spanGaps: true },
        { label: "train loss", stroke: "#555", points: dot("#555"), spanGaps: true },
        { label: "test loss", stroke: "#8e44ad", dash: [5, 3], points: dot("#8e44ad"), spanGaps: true },
        { label: "baseline", stroke: "#d68910", width: 1.5, dash: [2, 4], spanGaps: true },
      ],
    };
  }
  return {
    height: 190,
    legend: { live: false, show: true },
    scales: { x: { time: false }, acc: { range: [0, 1] } },
    axes: [
      { label: "step" },
      { label: "loss", size: 44 },
      { side: 1, scale: "acc", label: "test accuracy", size: 58, grid: { show: false }, values: (u, s) => s.map((v) => `${Math.round(v * 100)}%`) },
    ],
    series: [
      { label: "step" },
      { label: "probe loss", stroke: colour, width: 1.5, spanGaps: true },
      { label: "train loss", stroke: "#555", points: dot("#555"), spanGaps: true },
      { label: "test loss", stroke: "#8e44ad", dash: [5, 3], points: dot("#8e44ad"), spanGaps: true },
      { label: "test accuracy", scale: "acc", stroke: "#239b56", points: dot("#239b56"), spanGaps: true,
        value: (u, v) => (v === null ? "–" : `${(100 * v).toFixed(1)} %`) },
    ],
  };
}

export function fractionsOptions(hidden) {
  // the saturated and the dead fraction of each hidden layer's units
  const axis = layerAxis("hidden layer", hidden);
  return {
    height: 150,
    padding: [null, axis.overhang, null, null],
    legend: { live: false, show: true },
    scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [axis.axis, { size: 50, values: (u, s) => s.map((v) => `${Math.round(v * 100)}%`) }],
    series: [
      { label: "layer" },
      { label: "saturated", stroke: "#d68910", width: 2, points: { show: true, size: 6, fill: "#d68910" } },
      { label: "dead", stroke: "#34495e", width: 2, dash: [5, 3], points: { show: true, size: 6, fill: "#34495e" } },
    ],
  };
}

export function preluOptions(hidden, colour) {
  // each hidden layer's learnt PReLU slope
  const axis = layerAxis("hidden layer", hidden);
  return {
    height: 130,
    padding: [null, axis.overhang, null, null],
    scales: { x: { time: false } },
    axes: [axis.axis, { size: 44 }],
    series: [{ label: "layer" }, { label: "slope", stroke: colour, width: 2, points: { show: true, size: 6, fill: colour } }],
  };
}

function layerAxis(label, names) {
  // An x axis over layers 1 .. n whose ticks are `names`: as many as fit side by side, the
  // first and the last layer always; `overhang`: the right padding half the last name needs.
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = AXIS_FONT;
  const width = (text) => measure.measureText(text || "").width;
  const widest = Math.max(12, ...names.map(width)) + 12;
  const axis = {
    label,
    font: AXIS_FONT,
    splits: (u) => {
      const plot = u.bbox.width / (window.devicePixelRatio || 1) || u.width;
      return layerTicks(u.data[0].length, Math.max(2, Math.floor(plot / widest) + 1));
    },
    values: (u, splits) => splits.map((v) => names[v - 1] ?? ""),
  };
  return { axis, overhang: Math.max(12, width(names[names.length - 1]) / 2 + 4) };
}

function layerTicks(count, fits) {
  // `fits` or fewer ticks among layers 1 .. count, evenly spaced, 1 and count among them
  if (count <= 1) return count ? [1] : [];
  const every = Math.max(1, Math.ceil((count - 1) / (fits - 1)));
  const ticks = [];
  for (let layer = 1; layer < count; layer += every) ticks.push(layer);
  if (ticks.length > 1 && count - ticks[ticks.length - 1] < every) ticks.pop(); // too close
  ticks.push(count);
  return ticks;
}

function sized(canvas, width, height) {
  // The canvas at width x height CSS pixels, drawn at the screen's density: its 2-d context.
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.scale(dpr, dpr);
  return context;
}

export function drawHeatmap(canvas, probes, weighted, width) {
  // rows: weighted layers (the first on top); columns: probes; colour: log10 of the
  // weight-gradient norm. Answers the colour scale's decades, [lo, hi], or null if nothing drawn.
  const layers = probes.length ? probes[probes.length - 1].grad_norms.length : 0;
  const grid = Array.from({ length: layers }, (_, layer) => probes.map((p) => p.grad_norms[layer]));
  const ends = probes.length ? [`step ${probes[0].step}`, `step ${probes[probes.length - 1].step}`] : [];
  return drawGrid(canvas, grid, weighted, ends, width);
}

export function drawTimeHeatmap(canvas, norms, names, width) {
  // rows: recurrent layers (the first on top); columns: time steps t = 1 .. T; colour: log10
  // of ‖∂L/∂h_t‖ at one probe. Answers [lo, hi] as drawHeatmap does.
  const steps = Math.max(0, ...norms.map((values) => values.length));
  const grid = norms.map((values) => Array.from({ length: steps }, (_, t) => values[t]));
  return drawGrid(canvas, grid, names, steps ? ["t = 1", `t = ${steps}`] : [], width);
}

function drawGrid(canvas, grid, names, [start, end] = [], width) {
  // A heatmap of grid[row][column] (rows named by `names`, the first and last beside their
  // rows; `start` and `end` under the first and the last column), coloured by log10 of each
  // value on whole decades, grey where it is not a positive number. Answers [lo, hi], the
  // scale's decades, or null when there is nothing to draw.
  const rows = grid.length;
  const columns = rows ? Math.max(...grid.map((row) => row.length)) : 0;
  const height = Math.max(90, Math.min(220, rows * 16));
  const context = sized(canvas, width, height);
  context.clearRect(0, 0, width, height);
  if (!rows || !columns) return null;
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of grid) {
    for (const v of row) {
      if (positive(v) === null) continue;
      lo = Math.min(lo, Math.log10(v));
      hi = Math.max(hi, Math.log10(v));
    }
  }
  if (!Number.isFinite(lo)) return null;
  lo = Math.floor(lo);
  hi = Math.max(lo + 1, Math.ceil(hi));
  const image = new ImageData(columns, rows);
  grid.forEach((row, r) => {
    for (let column = 0; column < columns; column++) {
      const v = positive(row[column]);
      const [red, green, blue] = v === null ? [200, 200, 200] : colour((Math.log10(v) - lo) / (hi - lo));
      image.data.set([red, green, blue, 255], 4 * (r * columns + column));
    }
  });
  context.font = "11px system-ui, sans-serif";
  const first = names[0] ?? "";
  const last = rows > 1 ? names[rows - 1] ?? "" : "";
  const widest = Math.max(context.measureText(first).width, context.measureText(last).width);
  const left = Math.min(width / 3, Math.max(46, Math.ceil(widest) + 8)); // room for the names
  const bottom = 14;
  const cells = new OffscreenCanvas(columns, rows);
  cells.getContext("2d").putImageData(image, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(cells, left, 0, width - left, height - bottom);
  context.fillStyle = "#444";
  context.textBaseline = "top";
  if (first) context.fillText(first, 0, 1);
  context.textBaseline = "bottom";
  if (last) context.fillText(last, 0, height - bottom);
  if (start) context.fillText(start, left, height);
  if (end) context.fillText(end, width - context.measureText(end).width, height);
  return [lo, hi];
}

export function drawHistograms(canvas, histograms, hidden, fill, width) {
  // small multiples: one histogram per hidden layer, each on its own x range
  const columns = width > 420 ? 4 : 3;
  const cellWidth = width / columns;
  const cellHeight = 62;
  const height = Math.ceil(histograms.length / columns) * cellHeight;
  const context = sized(canvas, width, height);
  context.font = "10px system-ui, sans-serif";
  histograms.forEach((histogram, index) => {
    const x0 = (index % columns) * cellWidth + 4;
    const y0 = Math.floor(index / columns) * cellHeight;
    const w = cellWidth - 10;
    const h = cellHeight - 26;
    const counts = histogram.counts || [];
    const edges = histogram.edges || [];
    const most = Math.max(1, ...counts);
    context.fillStyle = "#f3f4f6";
    context.fillRect(x0, y0 + 12, w, h);
    context.fillStyle = fill;
    const bar = w / Math.max(1, counts.length);
    counts.forEach((c, i) => {
      const barHeight = (h * c) / most;
      context.fillRect(x0 + i * bar, y0 + 12 + h - barHeight, Math.max(1, bar - 0.5), barHeight);
    });
    context.fillStyle = "#333";
    context.textBaseline = "top";
    if (hidden[index]) context.fillText(hidden[index], x0, y0);
    context.fillStyle = "#777";
    context.textBaseline = "bottom";
    if (edges.length) {
      context.fillText(exp(edges[0]), x0, y0 + cellHeight - 2);
      const right = exp(edges[edges.length - 1]);
      context.fillText(right, x0 + w - context.measureText(right).width, y0 + cellHeight - 2);
    }
  });
}

export function positive(v) {
  return typeof v === "number" && v > 0 && Number.isFinite(v) ? v : null;
}

export function exp(v) {
  // 0.000123 -> "1.2e-4"; plain below 1e4 and above 1e-2
  if (v === null || v === undefined || !Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 0.01 && a < 1e4) return String(Number(v.toPrecision(3)));
  const [mantissa, power] = v.toExponential(1).split("e");
  return `${mantissa.replace(/\.0$/, "")}e${Number(power)}`;
}

function decades(u, splits) {
  // a log axis's ticks: whole decades only, every k-th so that about five are labelled
  const isDecade = (v) => v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-6;
  const every = Math.max(1, Math.ceil(splits.filter(isDecade).length / 5));
  return splits.map((v) => (isDecade(v) && Math.round(Math.log10(v)) % every === 0 ? v : null));
}

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}
