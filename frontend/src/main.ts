import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { applyTheme } from "./lib/theme.svelte";
import { connect } from "./lib/stores/connection.svelte";

applyTheme();
connect();
mount(App, { target: document.getElementById("app")! });
