// Preloaded by connectd with `node --import <this file's URL>` when the app has
// npm packages. It only installs the resolve hook next to it, which the module
// loader runs on its own thread; see connect_node_hooks.mjs for why.
import { register } from 'node:module';

register('./connect_node_hooks.mjs', import.meta.url);
