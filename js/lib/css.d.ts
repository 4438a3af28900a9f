// Stylesheets are bundled by esbuild into crp_widgets/static/<entry>.css.
declare module "*.css";
