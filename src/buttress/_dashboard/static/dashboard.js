"use strict";
const source = new EventSource("api/stream");
source.addEventListener("state", (e) => {
  document.getElementById("state").textContent = e.data;
});
