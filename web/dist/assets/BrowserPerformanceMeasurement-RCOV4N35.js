import{a}from"./chunk-72BCYYL3.js";import"./chunk-5TBO732O.js";export{a as BrowserPerformanceMeasurement};
