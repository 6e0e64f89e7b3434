// The modelapi playground (docs/playground.md): a form built from the model's signature, Predict through the
// friendly JSON route, a CSV batch through the jobs API, and "copy as" snippets of the current request.
// No framework and no inline code: the page runs under a Content-Security-Policy of script-src 'self'.
"use strict";
(function () {
  var root = document.getElementById("playground");
  var model = root.getAttribute("data-model");
  var authOn = root.getAttribute("data-auth") === "on";
  // the page lives at <server>/models/<name>/playground: the API is two levels up (also under a path prefix)
  var base = new URL("../../", window.location.href);
  var modelPath = "models/" + encodeURIComponent(model);
  var KEY_PLACEHOLDER = "YOUR_API_KEY";
  var SVG = "http://www.w3.org/2000/svg";
  var MAX_TABLE_ROWS = 500;

  var apiKey = null; // in this page's memory only: never in storage, never in a URL
  var meta = null; // the metadata of the version the form is built for
  var inputs = []; // [{spec, element, error}]
  var snippetLang = "curl";
  var lastJob = null;

  function $(id) {
    return document.getElementById(id);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function url(path) {
    return new URL(path, base).href;
  }

  function authHeaders(extra) {
    var headers = extra || {};
    if (apiKey) headers.Authorization = "Bearer " + apiKey;
    return headers;
  }

  // one API call: {ok, status, body (parsed JSON, or text), headers}
  function call(path, options) {
    options = options || {};
    return fetch(url(path), {
      method: options.method || "GET",
      headers: authHeaders(options.headers),
      body: options.body,
      cache: "no-store",
      credentials: "omit",
    }).then(function (response) {
      var type = response.headers.get("content-type") || "";
      var read = type.indexOf("json") >= 0 ? response.json() : response.text();
      return read.then(function (body) {
        return { ok: response.ok, status: response.status, body: body, headers: response.headers };
      });
    });
  }

  function problemText(answer) {
    var body = answer.body;
    if (body && typeof body === "object") return body.detail || body.error || body.title || "HTTP " + answer.status;
    return "HTTP " + answer.status + (body ? ": " + String(body).slice(0, 200) : "");
  }

  function setStatus(text, isError) {
    var status = $("status");
    status.textContent = text || "";
    status.className = isError ? "status error" : "status";
  }

  function needKey(answer) {
    $("key-section").hidden = false;
    setStatus(apiKey ? problemText(answer) : "Enter an API key to use this model.", true);
    $("api-key").focus();
  }

  // model metadata and the form ---------------------------------------------------------------------------------
  function versionPath() {
    var version = $("version").value;
    return version ? modelPath + "/versions/" + encodeURIComponent(version) : modelPath;
  }

  function loadModel() {
    setStatus("Loading the model's description…");
    return call(modelPath).then(function (answer) {
      if (answer.status === 401) return needKey(answer);
      if (!answer.ok) return setStatus(problemText(answer), true);
      fillVersions(answer.body);
      showModel(answer.body);
      // jobs run on the default version: the batch names its inputs, whichever version the form shows
      if (answer.body.example) {
        $("batch-columns").textContent = answer.body.inputs.map(function (s) { return s.name; }).join(", ");
      }
    }, networkError);
  }

  function networkError(error) {
    setStatus("The server did not answer: " + error, true);
  }

  function fillVersions(summary) {
    var select = $("version");
    select.textContent = "";
    var def = summary.default_version;
    select.appendChild(el("option", { value: "" }, "default" + (def ? " (" + def + ")" : "")));
    (summary.versions || []).forEach(function (v) {
      if (v.state === "READY") select.appendChild(el("option", { value: v.version }, v.version));
    });
    select.parentNode.hidden = (summary.versions || []).length < 2;
  }

  function showModel(description) {
    meta = description;
    if (!description.example) {
      setStatus("Model '" + model + "' has no version ready to serve yet.", true);
      return;
    }
    var info = description.info || {};
    setStatus("Version " + description.version + " · " + (description.platform || "") +
      (info.estimator ? " · " + info.estimator : ""));
    buildForm(description.inputs, description.example.request || {});
    $("tabs").hidden = false;
    selectTab(document.querySelector("#tabs [aria-selected=true]").id === "tab-batch" ? "batch" : "form");
    updateSnippet();
  }

  function isScalar(spec) {
    return spec.shape.length === 1;
  }

  function fieldFor(spec, value, id) {
    var input;
    if (isScalar(spec) && spec.datatype === "BOOL") {
      input = el("input", { id: id, type: "checkbox" });
      input.checked = value === true;
    } else if (isScalar(spec) && spec.categories && spec.categories.length) {
      input = el("select", { id: id });
      spec.categories.forEach(function (category, i) {
        var option = el("option", { value: String(i) }, category);
        if (category === value) option.selected = true;
        input.appendChild(option);
      });
    } else if (!isScalar(spec)) {
      input = el("textarea", { id: id, rows: "2", spellcheck: "false" });
      input.value = JSON.stringify(value);
    } else {
      var numeric = spec.datatype !== "BYTES";
      input = el("input", { id: id, type: "text", spellcheck: "false", autocomplete: "off" });
      if (numeric) input.setAttribute("inputmode", spec.datatype.charAt(0) === "F" ? "decimal" : "numeric");
      input.value = value === null || value === undefined ? "" : String(value);
    }
    input.setAttribute("name", spec.name);
    return input;
  }

  function typeWords(spec) {
    if (spec.categories && spec.categories.length) return "one of " + spec.categories.length;
    var words = { BOOL: "true/false", BYTES: "text" };
    var word = words[spec.datatype] || (spec.datatype.charAt(0) === "F" ? "number" : "integer");
    return isScalar(spec) ? word : word + " " + JSON.stringify(spec.shape.slice(1)) + " (JSON)";
  }

  function buildForm(specs, example) {
    var box = $("fields");
    box.textContent = "";
    inputs = specs.map(function (spec, i) {
      var id = "field-" + i;
      var wrap = el("div", { class: "field" + (isScalar(spec) && spec.datatype === "BOOL" ? " check" : "") });
      wrap.setAttribute("data-field", spec.name);
      var label = el("label", { for: id });
      label.appendChild(el("span", { class: "name" }, spec.name));
      label.appendChild(el("span", { class: "type" }, typeWords(spec)));
      var input = fieldFor(spec, example[spec.name], id);
      var error = el("p", { class: "field-error", id: id + "-error", role: "alert" });
      error.hidden = true;
      input.setAttribute("aria-describedby", id + "-error");
      input.addEventListener("input", function () {
        clearError(entry);
        updateSnippet();
      });
      input.addEventListener("change", updateSnippet);
      wrap.appendChild(label);
      wrap.appendChild(input);
      wrap.appendChild(error);
      box.appendChild(wrap);
      var entry = { spec: spec, element: input, error: error, wrap: wrap };
      return entry;
    });
  }

  var NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

  // the form's values as the record sent: what the user typed, for the server to judge (its message names the field)
  function record() {
    var out = {};
    inputs.forEach(function (entry) {
      var spec = entry.spec;
      var node = entry.element;
      var value;
      if (node.type === "checkbox") value = node.checked;
      else if (node.tagName === "SELECT") value = spec.categories[Number(node.value)];
      else if (node.tagName === "TEXTAREA") {
        try {
          value = JSON.parse(node.value);
        } catch (e) {
          value = node.value;
        }
      } else if (spec.datatype === "BYTES") value = node.value;
      else {
        var text = node.value.trim();
        value = text === "" ? null : NUMBER.test(text) ? Number(text) : text;
      }
      out[spec.name] = value;
    });
    return out;
  }

  function clearError(entry) {
    entry.error.hidden = true;
    entry.error.textContent = "";
    entry.element.removeAttribute("aria-invalid");
    entry.wrap.classList.remove("invalid");
  }

  function clearErrors() {
    inputs.forEach(clearError);
    $("form-error").hidden = true;
  }

  function showError(answer) {
    var field = answer.body && answer.body.field;
    var entry = inputs.filter(function (e) { return e.spec.name === field; })[0];
    if (entry) {
      entry.error.textContent = problemText(answer);
      entry.error.hidden = false;
      entry.element.setAttribute("aria-invalid", "true");
      entry.wrap.classList.add("invalid");
      entry.element.focus();
    } else {
      $("form-error").textContent = problemText(answer);
      $("form-error").hidden = false;
    }
  }

  // predict -----------------------------------------------------------------------------------------------------
  function predict(event) {
    event.preventDefault();
    clearErrors();
    var body = JSON.stringify(record());
    var started = performance.now();
    $("predict").disabled = true;
    call(versionPath() + "/predict", { method: "POST", headers: { "Content-Type": "application/json" }, body: body })
      .then(function (answer) {
        var ms = Math.round(performance.now() - started);
        if (!answer.ok) {
          // the answer on screen was for other values: it goes, so that it is not read as this one's
          clearResult("No answer: these values were refused (the message is by the form).",
            answer.headers.get("model-version"), ms);
          return answer.status === 401 ? needKey(answer) : showError(answer);
        }
        showResult(answer.body, answer.headers.get("model-version"), ms);
      }, function (error) {
        clearResult("No answer: the server could not be reached.", null, null);
        networkError(error);
      })
      .then(function () {
        $("predict").disabled = false;
        // how many answers (or refusals) the form has shown: lets a test, or a person, tell a new one apart
        $("result").setAttribute("data-answers", String(Number($("result").getAttribute("data-answers") || 0) + 1));
      });
  }

  // no result for the values sent: the last one is taken off the screen and the card says why; a refusal after
  // a version was chosen names it (its Model-Version header), as a canary refusing what the stable version takes
  function clearResult(text, version, ms) {
    var label = $("result-label");
    label.textContent = "";
    label.hidden = true;
    $("chart").textContent = "";
    $("result-empty").textContent = text;
    $("result-empty").hidden = false;
    $("result").setAttribute("data-state", "refused");
    $("result-meta").textContent = version ? "refused by version " + version + (ms === null ? "" : " · " + ms + " ms") : "";
  }

  function showResult(body, version, ms) {
    $("result").setAttribute("data-state", "answered");
    $("result-empty").hidden = true;
    var label = $("result-label");
    var prediction = body.prediction !== undefined ? body.prediction : body;
    label.textContent = typeof prediction === "object" ? JSON.stringify(prediction) : String(prediction);
    label.hidden = false;
    var chart = $("chart");
    chart.textContent = "";
    if (body.probabilities && typeof body.probabilities === "object" && !Array.isArray(body.probabilities)) {
      // drawn at the box's own width in pixels, so that its text keeps its size on a phone
      chart.appendChild(barChart(body.probabilities, prediction, Math.max(240, Math.min(520, chart.clientWidth || 400))));
    }
    var others = Object.keys(body).filter(function (k) { return k !== "prediction" && k !== "probabilities"; });
    var extra = others.map(function (k) { return k + ": " + JSON.stringify(body[k]); }).join(" · ");
    $("result-meta").textContent = "version " + (version || "?") + " · " + ms + " ms" + (extra ? " · " + extra : "");
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (name) {
      node.setAttribute(name, String(attrs[name]));
    });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // one horizontal bar per class, in the model's class order; the predicted class highlighted
  function barChart(probabilities, predicted, width) {
    var names = Object.keys(probabilities);
    var row = 30;
    var labelWidth = Math.min(120, Math.round(width * 0.32));
    var barMax = width - labelWidth - 60;
    var chart = svg("svg", {
      viewBox: "0 0 " + width + " " + (names.length * row + 4),
      width: width,
      role: "img",
      "aria-label": "class probabilities",
      class: "bars",
    });
    names.forEach(function (name, i) {
      var p = Number(probabilities[name]) || 0;
      var y = i * row + 4;
      var group = svg("g", { class: String(name) === String(predicted) ? "bar top" : "bar" });
      group.setAttribute("data-class", name);
      var room = Math.floor((labelWidth - 8) / 7.5);
      var shown = name.length > room ? name.slice(0, room - 1) + "…" : name;
      group.appendChild(svg("text", { x: labelWidth - 8, y: y + 17, "text-anchor": "end", class: "bar-label" }, shown));
      group.appendChild(svg("rect", { x: labelWidth, y: y + 3, width: barMax, height: row - 10, rx: 3, class: "bar-bg" }));
      group.appendChild(svg("rect", {
        x: labelWidth, y: y + 3, width: Math.max(p * barMax, 0.5), height: row - 10, rx: 3, class: "bar-fill",
      }));
      group.appendChild(svg("text", { x: labelWidth + barMax + 8, y: y + 17, class: "bar-value" }, (p * 100).toFixed(1) + "%"));
      var title = svg("title", {}, name + ": " + p);
      group.appendChild(title);
      chart.appendChild(group);
    });
    return chart;
  }

  // copy as -----------------------------------------------------------------------------------------------------
  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function pyValue(value) {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return "[" + value.map(pyValue).join(", ") + "]";
    if (typeof value === "object") {
      return "{" + Object.keys(value).map(function (k) { return JSON.stringify(k) + ": " + pyValue(value[k]); }).join(", ") + "}";
    }
    return JSON.stringify(value); // numbers as sent; a JSON string literal is a valid Python one
  }

  function snippet(lang) {
    var data = record();
    var body = JSON.stringify(data);
    var target = url(versionPath() + "/predict");
    var version = $("version").value;
    var server = base.href.replace(/\/$/, "");
    var keyed = authOn;
    if (lang === "curl") {
      return [
        "curl -s " + shellQuote(target),
        "  -H 'Content-Type: application/json'",
      ].concat(keyed ? ["  -H 'Authorization: Bearer " + KEY_PLACEHOLDER + "'"] : [])
        .concat(["  -d " + shellQuote(body)]).join(" \\\n");
    }
    if (lang === "python") {
      return [
        "from modelapi import Client",
        "client = Client(" + JSON.stringify(server) + (keyed ? ", api_key=" + JSON.stringify(KEY_PLACEHOLDER) : "") + ")",
        "print(client.predict(" + JSON.stringify(model) + ", " + pyValue(data) +
          (version ? ", version=" + JSON.stringify(version) : "") + "))",
      ].join("\n");
    }
    var headers = '{"Content-Type": "application/json"' +
      (keyed ? ', "Authorization": "Bearer ' + KEY_PLACEHOLDER + '"' : "") + "}";
    return [
      "const response = await fetch(" + JSON.stringify(target) + ", {",
      '  method: "POST",',
      "  headers: " + headers + ",",
      "  body: JSON.stringify(" + body + "),",
      "});",
      "console.log(await response.json());",
    ].join("\n");
  }

  function updateSnippet() {
    if (!meta) return;
    $("snippet").textContent = snippet(snippetLang);
    $("snippet-note").textContent = authOn
      ? "Replace " + KEY_PLACEHOLDER + " with your key: the page never writes a key into a snippet, since " +
        "snippets end up in chats, tickets and notebooks."
      : "";
  }

  function copySnippet() {
    var text = $("snippet").textContent;
    var done = function () {
      $("copy").textContent = "Copied";
      window.setTimeout(function () { $("copy").textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, selectSnippet);
    } else {
      selectSnippet();
    }
  }

  function selectSnippet() {
    var range = document.createRange();
    range.selectNodeContents($("snippet"));
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // batch -------------------------------------------------------------------------------------------------------
  function batchError(text) {
    $("batch-error").textContent = text;
    $("batch-error").hidden = false;
    $("batch-run").disabled = false;
  }

  function progress(value, text) {
    $("batch-progress-box").hidden = false;
    $("batch-progress").value = Math.max(0, Math.min(100, value));
    $("batch-progress-text").textContent = text;
  }

  function runBatch() {
    var file = $("csv-file").files[0];
    $("batch-error").hidden = true;
    $("batch-result").hidden = true;
    if (!file) return batchError("Choose a CSV file first.");
    $("batch-run").disabled = true;
    var form = new FormData();
    form.append("file", file, file.name);
    // XMLHttpRequest, not fetch: it reports the upload's progress, which a large file needs
    var xhr = new XMLHttpRequest();
    xhr.open("POST", url(modelPath + "/jobs"));
    if (apiKey) xhr.setRequestHeader("Authorization", "Bearer " + apiKey);
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) progress((100 * event.loaded) / event.total, "Uploading " + Math.round((100 * event.loaded) / event.total) + "%");
    });
    xhr.addEventListener("error", function () { batchError("The upload failed: the server did not answer."); });
    xhr.addEventListener("load", function () {
      var body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (e) {
        body = xhr.responseText;
      }
      var answer = { ok: xhr.status < 300, status: xhr.status, body: body };
      if (xhr.status === 401) {
        $("batch-run").disabled = false;
        return needKey(answer);
      }
      if (!answer.ok) return batchError(problemText(answer));
      lastJob = body;
      progress(0, "Queued");
      pollJob(body.id);
    });
    progress(0, "Uploading");
    xhr.send(form);
  }

  function pollJob(id) {
    call("jobs/" + encodeURIComponent(id)).then(function (answer) {
      if (!answer.ok) return batchError(problemText(answer));
      var job = answer.body;
      var p = job.progress || {};
      var total = p.rows_total || 0;
      var done = p.rows_done || 0;
      var waiting = job.waiting ? " · " + job.waiting.detail : "";  // held by the key's row limit
      progress(total ? (100 * done) / total : 0, job.status + " · " + done.toLocaleString() + " of " + total.toLocaleString() + " rows" + waiting);
      if (job.status === "succeeded") return loadResult(job);
      if (job.status === "failed" || job.status === "cancelled") {
        return batchError("The job " + job.status + (job.error ? ": " + job.error.detail : ""));
      }
      window.setTimeout(function () { pollJob(id); }, 400);
    }, function (error) { batchError("The server did not answer: " + error); });
  }

  function flatten(row) {
    var out = {};
    Object.keys(row).forEach(function (key) {
      var value = row[key];
      if (value && typeof value === "object" && !Array.isArray(value)) {
        Object.keys(value).forEach(function (sub) { out[key + "." + sub] = value[sub]; });
      } else {
        out[key] = value;
      }
    });
    return out;
  }

  function loadResult(job) {
    call("jobs/" + encodeURIComponent(job.id) + "/result?format=json").then(function (answer) {
      if (!answer.ok) return batchError(problemText(answer));
      showTable(answer.body);
      $("batch-run").disabled = false;
    }, function (error) { batchError("The server did not answer: " + error); });
  }

  function cell(value) {
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(4);
    return value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function showTable(rows) {
    var table = $("batch-table");
    table.textContent = "";
    var flat = rows.slice(0, MAX_TABLE_ROWS).map(flatten);
    var columns = flat.length ? Object.keys(flat[0]) : [];
    var head = el("thead");
    var tr = el("tr");
    tr.appendChild(el("th", {}, "row"));
    columns.forEach(function (c) { tr.appendChild(el("th", {}, c)); });
    head.appendChild(tr);
    table.appendChild(head);
    var tbody = el("tbody");
    flat.forEach(function (row, i) {
      var line = el("tr");
      line.appendChild(el("td", {}, i + 1));
      columns.forEach(function (c) { line.appendChild(el("td", {}, cell(row[c]))); });
      tbody.appendChild(line);
    });
    table.appendChild(tbody);
    $("batch-summary").textContent = rows.length > MAX_TABLE_ROWS
      ? "Showing the first " + MAX_TABLE_ROWS + " of " + rows.length + " rows; the download has them all."
      : rows.length + " rows";
    $("batch-result").hidden = false;
  }

  function download() {
    if (!lastJob) return;
    call("jobs/" + encodeURIComponent(lastJob.id) + "/result?format=csv").then(function (answer) {
      if (!answer.ok) return batchError(problemText(answer));
      var link = el("a", { download: model + "-predictions.csv" });
      link.href = URL.createObjectURL(new Blob([answer.body], { type: "text/csv" }));
      document.body.appendChild(link);
      link.click();
      link.remove();
      window.setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
    });
  }

  // tabs and wiring ---------------------------------------------------------------------------------------------
  function selectTab(which) {
    $("tab-form").setAttribute("aria-selected", String(which === "form"));
    $("tab-batch").setAttribute("aria-selected", String(which === "batch"));
    $("panel-form").hidden = which !== "form";
    $("panel-batch").hidden = which !== "batch";
  }

  function versionChanged() {
    call(versionPath()).then(function (answer) {
      if (answer.status === 401) return needKey(answer);
      if (!answer.ok) return setStatus(problemText(answer), true);
      showModel(answer.body);
    }, networkError);
  }

  $("tab-form").addEventListener("click", function () { selectTab("form"); });
  $("tab-batch").addEventListener("click", function () { selectTab("batch"); });
  $("predict-form").addEventListener("submit", predict);
  $("reset").addEventListener("click", function () {
    clearErrors();
    if (meta && meta.example) buildForm(meta.inputs, meta.example.request || {});
    updateSnippet();
  });
  $("version").addEventListener("change", versionChanged);
  $("copy").addEventListener("click", copySnippet);
  $("batch-run").addEventListener("click", runBatch);
  $("batch-download").addEventListener("click", download);
  Array.prototype.forEach.call(document.querySelectorAll(".snippet-tab"), function (button) {
    button.addEventListener("click", function () {
      snippetLang = button.getAttribute("data-lang");
      Array.prototype.forEach.call(document.querySelectorAll(".snippet-tab"), function (other) {
        other.setAttribute("aria-selected", String(other === button));
      });
      updateSnippet();
    });
  });
  $("key-section").addEventListener("submit", function (event) {
    event.preventDefault();
    apiKey = $("api-key").value.trim() || null;
    loadModel();
  });
  if (authOn) $("key-section").hidden = false;
  loadModel();
})();
