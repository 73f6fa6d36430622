// Building the page's elements.

export function element(tag, attributes = {}, children = []) {
  // <tag attributes>children</tag>; the attribute `text` is the text content
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export function showError(message) {
  // the form's one line of error; empty: hidden
  const box = document.getElementById("form-error");
  box.textContent = message || "";
  box.hidden = !message;
}
