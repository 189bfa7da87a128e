// gradio 6.31's gr.Plot draws every new figure twice: the component holding the old figure redraws it with the
// new value (Plotly.react, a full draw) just before gradio discards that element and draws the figure again in a
// fresh one. Here each Plotly.react (and the Plots.resize gradio calls right after it) waits for the end of the
// current task and is dropped when its element has left the page by then, so only the element that stays is
// drawn. Measured in Chromium on a strategy switch: four draws of 35-110 ms each became two.
(() => {
  const patch = (plotly) => {
    if (!plotly || plotly.__gridvlmOnce) return plotly;
    const react = plotly.react.bind(plotly);
    const resize = plotly.Plots.resize.bind(plotly.Plots);
    const later = (gd, draw) => new Promise((resolve) => {
      queueMicrotask(() => resolve(gd && gd.isConnected === false ? gd : draw()));
    });
    plotly.react = (gd, ...rest) => later(gd, () => react(gd, ...rest));
    plotly.Plots.resize = (gd) => later(gd, () => resize(gd));
    plotly.__gridvlmOnce = true;
    return plotly;
  };
  let current = window.Plotly;
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    get: () => current,
    set: (value) => { current = patch(value); },
  });
  if (current) patch(current);
})();
